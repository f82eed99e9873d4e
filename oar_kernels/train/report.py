"""Run outputs besides checkpoints: metrics JSONL, reward/accuracy plots, the weights page."""
from __future__ import annotations

import html
import json
import os
from typing import Any, Dict, List


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


def plot_curves(rows: List[Dict[str, Any]], out_dir: str, title: str = "") -> List[str]:
    """reward.png (train reward, with a moving average) and accuracy.png (train and held-out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    paths = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        steps = [r["step"] for r in train]
        rew = [r["reward"] for r in train]
        ax.plot(steps, rew, ".", alpha=0.4, label="reward (batch mean)")
        k = max(1, len(rew) // 10)
        ma = [sum(rew[max(0, i - k + 1): i + 1]) / len(rew[max(0, i - k + 1): i + 1]) for i in range(len(rew))]
        ax.plot(steps, ma, "-", label=f"moving average ({k})")
    ax.set_xlabel("step"), ax.set_ylabel("reward"), ax.set_title(f"{title} reward".strip())
    ax.legend(loc="best"), ax.grid(alpha=0.3)
    paths.append(os.path.join(out_dir, "reward.png"))
    fig.tight_layout(), fig.savefig(paths[-1], dpi=100), plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot([r["step"] for r in train], [r["accuracy"] for r in train], "-", alpha=0.6, label="train (sampled)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", label="held-out (greedy)")
    ax.set_xlabel("step"), ax.set_ylabel("accuracy"), ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{title} accuracy".strip()), ax.legend(loc="best"), ax.grid(alpha=0.3)
    paths.append(os.path.join(out_dir, "accuracy.png"))
    fig.tight_layout(), fig.savefig(paths[-1], dpi=100), plt.close(fig)
    return paths


def _colour(w: float, reasoning: bool, wmax: float) -> str:
    if not reasoning:
        return "background:#e8e8e8;color:#777"
    if w >= 1.0:
        a = min(1.0, (w - 1.0) / max(wmax - 1.0, 1e-6))
        return f"background:rgba(0,160,60,{0.12 + 0.78 * a:.2f})"
    a = min(1.0, 1.0 - w)
    return f"background:rgba(220,40,40,{0.12 + 0.78 * a:.2f})"


def plot_weights(samples: List[Dict[str, Any]], path: str, title: str = "OAR weights", width: int = 64,
                 max_lines: int = 6) -> None:
    """weights.png: the tokens of a few responses on a grid (monospace cells, wrapped at `width`
    characters), each on the colour of its OAR weight as in weights.html: green boosted (w > 1),
    red suppressed (w < 1), grey outside the reasoning (w = 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    blocks = []  # per response: header, list of lines of (text, rgba)
    for s in samples:
        ws = [w for w, r in zip(s["weights"], s["reasoning"]) if r]
        wmax = max(ws) if ws else 1.0
        lines, cur, n = [], [], 0
        for tok, w, r in zip(s["tokens"], s["weights"], s["reasoning"]):
            text = tok.replace("\n", "\u21b5")
            if n + len(text) > width and cur:
                lines.append(cur)
                cur, n = [], 0
            if not r:
                colour = (0.91, 0.91, 0.91, 1.0)
            elif w >= 1.0:
                a = min(1.0, (w - 1.0) / max(wmax - 1.0, 1e-6))
                colour = to_rgba((0.0, 0.63, 0.24), 0.12 + 0.78 * a)
            else:
                colour = to_rgba((0.86, 0.16, 0.16), 0.12 + 0.78 * min(1.0, 1.0 - w))
            cur.append((text, colour))
            n += max(len(text), 1)
        if cur:
            lines.append(cur)
        head = (f"reward {s['reward']:.2f}, advantage {s['advantage']:+.3f}, weights "
                f"{min(ws or [1]):.2f}..{wmax:.2f} over {sum(s['reasoning'])} reasoning tokens")
        blocks.append((head, lines[:max_lines]))
    rows = sum(1 + len(lines) for _, lines in blocks) + 1
    fig = plt.figure(figsize=(width * 0.13 + 0.4, 0.27 * rows + 0.5))
    ax = fig.add_axes([0.01, 0.01, 0.98, 0.98])
    ax.set_xlim(0, width), ax.set_ylim(rows, 0), ax.axis("off")
    ax.text(0, 0.6, f"{title}: green boosted (w > 1), red suppressed (w < 1), grey not reasoning (w = 1)",
            fontsize=8, va="center")
    y = 1
    for head, lines in blocks:
        ax.text(0, y + 0.6, head, fontsize=7.5, color="#555", va="center")
        y += 1
        for line in lines:
            x = 0
            for text, colour in line:
                w = max(len(text), 1)
                ax.add_patch(plt.Rectangle((x, y + 0.1), w, 0.85, color=colour, linewidth=0))
                ax.text(x + w / 2, y + 0.55, text, fontsize=8, family="monospace", ha="center", va="center")
                x += w
            y += 1
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_weights_html(samples: Dict[int, List[Dict[str, Any]]], path: str, title: str = "OAR weights") -> None:
    """One block per response: prompt, then its tokens coloured by weight (green: boosted,
    above 1; red: suppressed, below 1; grey: outside the reasoning, weight 1). Hover a token
    for its weight."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>", html.escape(title), "</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        ".r{border:1px solid #ccc;border-radius:6px;padding:.6em;margin:.8em 0}"
        ".t{font-family:monospace;white-space:pre-wrap;line-height:1.7}.t span{padding:1px 0}"
        ".m{color:#555;font-size:.85em}</style>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Tokens of sampled responses coloured by their OAR weight w (token advantage = w &times; A): "
        "<span style='background:rgba(0,160,60,.8)'>&nbsp;boosted (w &gt; 1)&nbsp;</span> "
        "<span style='background:rgba(220,40,40,.8)'>&nbsp;suppressed (w &lt; 1)&nbsp;</span> "
        "<span style='background:#e8e8e8;color:#777'>&nbsp;not reasoning (w = 1)&nbsp;</span>. "
        "Darker means further from 1. Hover a token for its weight.</p>",
    ]
    if not samples:
        parts.append("<p>No weighted responses were recorded (GRPO, or no response had both an answer and a "
                     "non-zero advantage).</p>")
    for step in sorted(samples):
        parts.append(f"<h2>step {step}</h2>")
        for s in samples[step]:
            ws = [w for w, r in zip(s["weights"], s["reasoning"]) if r]
            wmax = max(ws) if ws else 1.0
            parts.append("<div class='r'>")
            parts.append(f"<div class='m'>reward {s['reward']:.2f} &middot; advantage {s['advantage']:+.3f} &middot; "
                         f"reasoning tokens {sum(s['reasoning'])} &middot; weight min {min(ws or [1]):.2f} "
                         f"max {wmax:.2f}</div>")
            parts.append(f"<div class='t' style='color:#444'>{html.escape(s['prompt'])}</div><div class='t'>")
            for tok, w, r in zip(s["tokens"], s["weights"], s["reasoning"]):
                parts.append(f"<span style='{_colour(w, r, wmax)}' title='w={w:.3f}'>{html.escape(tok)}</span>")
            parts.append("</div></div>")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(parts))
    os.replace(tmp, path)
