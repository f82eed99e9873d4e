"""Run outputs besides checkpoints: metrics JSONL, reward/accuracy plots, the weights page.

    reward.png    reward_figure: the batch-mean reward of each optimizer step (points) and a
                  moving average.
    accuracy.png  accuracy_figure: held-out accuracy as the measured points only (markers, no
                  line between two evaluations, each annotated with its value; the number of
                  problems from the eval rows' `eval_size`), the sampled training accuracy as a
                  light moving average labelled as such; no eval row: "no held-out evaluation"
                  and nothing held-out drawn.
    weights.png   weights_figure: per response its question, a header and its tokens coloured
                  by OAR weight, with a colour bar (red suppressed < 1 < green boosted, grey not
                  reasoning); weights.html uses the same colours and one scale per page.

The *_figure functions return matplotlib Figures built outside pyplot (tests inspect them);
plot_curves / plot_weights save them, and every file here is written under a temporary name
and renamed, so no reader sees half a file.
"""
from __future__ import annotations

import html
import json
import math
import os
import tempfile
import textwrap
from typing import Any, Dict, List, Optional, Sequence, Tuple


def append_jsonl(path: str, row: Dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill
                    break
    return rows


def truncate_metrics(path: str, last_step: int, drop_final_eval: bool = False) -> List[Dict[str, Any]]:
    """Keeps the rows of steps <= last_step (what the resumed checkpoint has seen); with
    drop_final_eval, also drops the evaluation at last_step (the resumed run redoes it)."""
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step
            and not (drop_final_eval and r.get("kind") == "eval" and r.get("step") == last_step and last_step > 0)]
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)
    return rows


# -- writing files ---------------------------------------------------------------------------

def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Saves a figure next to `path` under a temporary name, then renames it: a reader never
    sees half a file, and nothing is left behind when saving fails."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp.png", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write_text_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _figure(figsize):
    """A matplotlib Figure outside pyplot (no global state, nothing to close, any backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


# -- curves ---------------------------------------------------------------------------------

def moving_average(values: Sequence[float], k: int) -> List[float]:
    """Trailing mean over the last k values (fewer at the start)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def _window(n: int) -> int:
    return max(1, n // 10)


def _number(x) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x):
        return None
    return float(x)


def eval_points(rows: List[Dict[str, Any]]) -> List[Tuple[int, float, Optional[int]]]:
    """The held-out evaluations that were made: (step, accuracy, number of problems or None).

    A row without a numeric eval_accuracy, or with eval_size / n of 0, is no evaluation; the
    last row of a step wins (a resumed run redoes the evaluation it was killed in)."""
    by_step = {}
    for r in rows:
        if r.get("kind") != "eval":
            continue
        acc = _number(r.get("eval_accuracy"))
        size = r.get("eval_size", r.get("n"))
        size = int(size) if _number(size) is not None else None
        if acc is None or size == 0:
            continue
        step = int(r.get("step", 0))
        by_step[step] = (step, acc, size)
    return [by_step[s] for s in sorted(by_step)]


def reward_figure(rows: List[Dict[str, Any]], title: str = ""):
    """reward.png: the batch-mean reward of every optimizer step (points) and its moving average."""
    train = [r for r in rows if r.get("kind") == "train" and _number(r.get("reward")) is not None]
    fig = _figure((6, 3.5))
    ax = fig.subplots()
    if train:
        steps = [r["step"] for r in train]
        rew = [float(r["reward"]) for r in train]
        k = _window(len(rew))
        ax.plot(steps, rew, ".", alpha=0.4, label="reward (batch mean of the sampled responses)")
        ax.plot(steps, moving_average(rew, k), "-", label=f"moving average ({k} step{'s' * (k > 1)})")
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no training step", ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xlabel("optimizer step"), ax.set_ylabel("reward")
    ax.set_title(f"{title} reward".strip()), ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def accuracy_figure(rows: List[Dict[str, Any]], title: str = "", temperature: Optional[float] = None):
    """accuracy.png: held-out accuracy as measured points (markers, no line between two
    evaluations; each annotated with its value and, when the row has eval_size / n, the number
    of problems), and the sampled training accuracy as a light moving average, labelled as such.
    With no evaluation, nothing held-out is drawn: the plot says "no held-out evaluation"."""
    train = [r for r in rows if r.get("kind") == "train" and _number(r.get("accuracy")) is not None]
    points = eval_points(rows)
    fig = _figure((6, 3.5))
    ax = fig.subplots()
    if train:
        temp = temperature if temperature is not None else train[-1].get("temperature")
        k = _window(len(train))
        how = (f"temperature {temp:g}, " if _number(temp) is not None else "") + "batch mean"
        ax.plot([r["step"] for r in train], moving_average([float(r["accuracy"]) for r in train], k), "-",
                color="tab:gray", alpha=0.45, linewidth=1.2,
                label=f"sampled training accuracy ({how}, moving average {k})")
    if points:
        sizes = {s for _, _, s in points}
        size = f", {sizes.pop()} problems" if len(sizes) == 1 and None not in sizes else ""
        ax.plot([p[0] for p in points], [p[1] for p in points], linestyle="None", marker="o", ms=6,
                color="tab:blue", label=f"held-out accuracy (greedy{size})", zorder=3)
        shown = points if len(points) <= 12 else [points[0], points[-1]]
        for step, acc, n in shown:
            ax.annotate(f"{acc:.3f}" + (f"\n(n={n})" if n is not None and not size else ""), (step, acc),
                        textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7, color="tab:blue")
    else:
        ax.text(0.5, 0.5, "no held-out evaluation", ha="center", va="center", transform=ax.transAxes,
                fontsize=11, color="#777")
    ax.set_xlabel("optimizer step"), ax.set_ylabel("accuracy"), ax.set_ylim(-0.02, 1.1)
    ax.set_title(f"{title} accuracy".strip()), ax.grid(alpha=0.3)
    if train or points:
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(rows: List[Dict[str, Any]], out_dir: str, title: str = "", *,
                temperature: Optional[float] = None, figures: Optional[Dict[str, Any]] = None) -> List[str]:
    """Writes reward.png and accuracy.png (reward_figure, accuracy_figure) into out_dir, each
    atomically; returns the paths written. temperature: the sampling temperature, named in the
    training-accuracy label. figures: a dict that receives the Figure objects by file name."""
    paths = []
    for name, fig in (("reward.png", reward_figure(rows, title)),
                      ("accuracy.png", accuracy_figure(rows, title, temperature))):
        paths.append(save_figure(fig, os.path.join(out_dir, name)))
        if figures is not None:
            figures[name] = fig
    return paths


# -- OAR weights ----------------------------------------------------------------------------

GREEN = (0.0, 160 / 255, 60 / 255)  # boosted, rgba(0,160,60,a) in weights.html
RED = (220 / 255, 40 / 255, 40 / 255)  # suppressed, rgba(220,40,40,a)
GREY = (232 / 255, 232 / 255, 232 / 255)  # not reasoning, #e8e8e8
ALPHA_MIN, ALPHA_SPAN = 0.12, 0.78  # alpha at w = 1, and what is added at the end of the scale


def weight_scale(samples: Sequence[Dict[str, Any]]) -> Tuple[float, float]:
    """(lo, hi) of the colour scale shared by every response shown: lo <= 1 <= hi, the lowest and
    highest weight of a reasoning token."""
    ws = [float(w) for s in samples for w, r in zip(s["weights"], s["reasoning"]) if r]
    return min(ws + [1.0]), max(ws + [1.0])


def weight_alpha(w: float, scale: Tuple[float, float]) -> Tuple[Tuple[float, float, float], float]:
    """(base colour, alpha) of a reasoning token of weight w: green above 1, red below, the alpha
    growing from ALPHA_MIN at 1 to ALPHA_MIN + ALPHA_SPAN at the end of the shared scale."""
    lo, hi = scale
    if w >= 1.0:
        return GREEN, ALPHA_MIN + ALPHA_SPAN * min(1.0, (w - 1.0) / max(hi - 1.0, 1e-6))
    return RED, ALPHA_MIN + ALPHA_SPAN * min(1.0, (1.0 - w) / max(1.0 - lo, 1e-6))


def weight_rgb(w: float, reasoning: bool, scale: Tuple[float, float]) -> Tuple[float, float, float]:
    """The opaque colour of a token cell (its colour at its alpha over white)."""
    if not reasoning:
        return GREY
    base, a = weight_alpha(w, scale)
    return tuple(1.0 - a + a * c for c in base)


def _colour(w: float, reasoning: bool, scale) -> str:
    if not reasoning:
        return "background:#e8e8e8;color:#777"
    base, a = weight_alpha(w, scale)
    r, g, b = (round(c * 255) for c in base)
    return f"background:rgba({r},{g},{b},{a:.2f})"


def weight_colormap(scale: Tuple[float, float]):
    """(colormap, norm) of the colour bar: exactly weight_rgb over [lo, hi]."""
    import numpy as np
    from matplotlib.colors import ListedColormap, Normalize

    lo, hi = scale
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    xs = np.linspace(lo, hi, 256)
    return ListedColormap([weight_rgb(float(x), True, scale) for x in xs]), Normalize(lo, hi)


def _wrap(text: str, width: int, max_lines: int) -> List[str]:
    lines = []
    for para in text.strip().split("\n"):
        lines += textwrap.wrap(para, width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(width - 1, 0)] + "\u2026"
    return lines


def weights_figure(samples: List[Dict[str, Any]], title: str = "OAR weights", width: int = 64, max_lines: int = 6,
                   question_lines: int = 3):
    """The figure of plot_weights: per response, its question (the prompt text), a header line
    and its tokens on a grid (monospace cells, wrapped at `width` characters) coloured by OAR
    weight; a colour bar maps weight to colour (one scale for every response shown)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.patches import Patch, Rectangle

    scale = weight_scale(samples)
    blocks = []  # per response: question lines, header, token lines of (text, rgb)
    for s in samples:
        ws = [w for w, r in zip(s["weights"], s["reasoning"]) if r]
        lines, cur, n = [], [], 0
        for tok, w, r in zip(s["tokens"], s["weights"], s["reasoning"]):
            text = tok.replace("\n", "\u21b5")
            if n + len(text) > width and cur:
                lines.append(cur)
                cur, n = [], 0
            cur.append((text, weight_rgb(float(w), bool(r), scale)))
            n += max(len(text), 1)
        if cur:
            lines.append(cur)
        question = _wrap("Q: " + str(s.get("prompt", "")).strip(), width, question_lines)
        head = (f"reward {s['reward']:.2f}, advantage {s['advantage']:+.3f}, weights "
                f"{min(ws or [1]):.2f}..{max(ws or [1]):.2f} over {sum(map(bool, s['reasoning']))} reasoning tokens")
        blocks.append((question, head, lines[:max_lines]))
    rows = sum(len(q) + 1 + len(lines) for q, _, lines in blocks) + 1
    height = 0.27 * rows + 1.2  # + the colour bar
    fig = _figure((width * 0.13 + 0.4, height))
    bar_h = 1.0 / height  # inches -> figure fraction
    ax = fig.add_axes([0.01, 1.05 * bar_h, 0.98, 1.0 - 1.1 * bar_h])
    ax.set_xlim(0, width), ax.set_ylim(rows, 0), ax.axis("off")
    ax.text(0, 0.6, f"{title}: token colour = OAR weight w (token advantage = w \u00d7 A)", fontsize=8, va="center")
    y = 1
    for question, head, lines in blocks:
        for q in question:
            ax.text(0, y + 0.6, q, fontsize=7.5, color="#222", va="center", family="monospace")
            y += 1
        ax.text(0, y + 0.6, head, fontsize=7, color="#666", va="center")
        y += 1
        for line in lines:
            x = 0
            for text, colour in line:
                w = max(len(text), 1)
                ax.add_patch(Rectangle((x, y + 0.1), w, 0.85, facecolor=colour, linewidth=0))
                ax.text(x + w / 2, y + 0.55, text, fontsize=8, family="monospace", ha="center", va="center")
                x += w
            y += 1
    cmap, norm = weight_colormap(scale)
    cax = fig.add_axes([0.06, 0.42 * bar_h, 0.6, 0.18 * bar_h])
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal")
    lo, hi = scale
    bar.set_ticks(sorted({round(lo, 3), 1.0, round(hi, 3)}))
    bar.ax.tick_params(labelsize=7)
    bar.set_label("OAR weight w: red suppressed (w < 1), green boosted (w > 1)", fontsize=7)
    fig.legend(handles=[Patch(facecolor=GREY, label="not reasoning (w = 1)")], loc="lower right",
               bbox_to_anchor=(0.99, 0.25 * bar_h), fontsize=7, frameon=False)
    return fig


def plot_weights(samples: List[Dict[str, Any]], path: str, title: str = "OAR weights", width: int = 64,
                 max_lines: int = 6, *, figures: Optional[Dict[str, Any]] = None) -> None:
    """weights.png (written atomically): weights_figure of the samples, coloured as in
    weights.html: green boosted (w > 1), red suppressed (w < 1), grey outside the reasoning
    (w = 1), one scale for every response (the colour bar). figures: receives the Figure."""
    fig = weights_figure(samples, title, width, max_lines)
    save_figure(fig, path, dpi=110)
    if figures is not None:
        figures[os.path.basename(path)] = fig


def _html_legend(scale: Tuple[float, float]) -> str:
    """The page's colour scale: a gradient over [lo, hi] with the colours of the token cells."""
    lo, hi = scale
    span = max(hi - lo, 1e-6)
    stops = []
    for w in (lo, 1.0 - 1e-9 if lo < 1.0 else None, 1.0, hi):
        if w is None or not lo <= w <= hi:
            continue
        r, g, b = (round(c * 255) for c in weight_rgb(w, True, scale))
        stops.append(f"rgb({r},{g},{b}) {100 * (w - lo) / span:.1f}%")
    one = 100 * (1.0 - lo) / span
    return (
        "<div style='margin:.4em 0 1em;font-size:.85em;max-width:30em'>"
        f"<div style='height:1em;border:1px solid #ccc;background:linear-gradient(to right,{','.join(stops)})'></div>"
        "<div style='position:relative;height:1.3em'>"
        f"<span style='position:absolute;left:0'>{lo:.2f}</span>"
        f"<span style='position:absolute;left:{one:.1f}%;transform:translateX(-50%)'>1</span>"
        f"<span style='position:absolute;right:0'>{hi:.2f}</span></div>"
        "<div>colour scale of every token on this page: weight w from the lowest to the highest shown</div></div>")


def write_weights_html(samples: Dict[int, List[Dict[str, Any]]], path: str, title: str = "OAR weights") -> None:
    """One block per response: prompt, then its tokens coloured by weight (green: boosted,
    above 1; red: suppressed, below 1; grey: outside the reasoning, weight 1), on one colour
    scale for the whole page (shown as a gradient, the same colours as weights.png). Hover a
    token for its weight. Written atomically."""
    scale = weight_scale([s for step in samples for s in samples[step]])
    parts = [
        "<!doctype html><meta charset='utf-8'><title>", html.escape(title), "</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        ".r{border:1px solid #ccc;border-radius:6px;padding:.6em;margin:.8em 0}"
        ".t{font-family:monospace;white-space:pre-wrap;line-height:1.7}.t span{padding:1px 0}"
        ".m{color:#555;font-size:.85em}</style>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Tokens of sampled responses coloured by their OAR weight w (token advantage = w &times; A): "
        "<span style='background:rgba(0,160,60,.9)'>&nbsp;boosted (w &gt; 1)&nbsp;</span> "
        "<span style='background:rgba(220,40,40,.9)'>&nbsp;suppressed (w &lt; 1)&nbsp;</span> "
        "<span style='background:#e8e8e8;color:#777'>&nbsp;not reasoning (w = 1)&nbsp;</span>. "
        "Darker means further from 1, on one scale for the whole page. Hover a token for its weight.</p>",
    ]
    if not samples:
        parts.append("<p>No weighted responses were recorded (GRPO, or no response had both an answer and a "
                     "non-zero advantage).</p>")
    else:
        parts.append(_html_legend(scale))
    for step in sorted(samples):
        parts.append(f"<h2>step {step}</h2>")
        for s in samples[step]:
            ws = [w for w, r in zip(s["weights"], s["reasoning"]) if r]
            parts.append("<div class='r'>")
            parts.append(f"<div class='m'>reward {s['reward']:.2f} &middot; advantage {s['advantage']:+.3f} &middot; "
                         f"reasoning tokens {sum(map(bool, s['reasoning']))} &middot; weight min {min(ws or [1]):.2f} "
                         f"max {max(ws or [1]):.2f}</div>")
            parts.append(f"<div class='t' style='color:#444'>{html.escape(s['prompt'])}</div><div class='t'>")
            for tok, w, r in zip(s["tokens"], s["weights"], s["reasoning"]):
                parts.append(f"<span style='{_colour(w, r, scale)}' title='w={w:.3f}'>{html.escape(tok)}</span>")
            parts.append("</div></div>")
    _write_text_atomic(path, "".join(parts))
