"""The run's plots say what was measured: held-out accuracy as points only (nothing held-out
without an evaluation), the sampled training accuracy labelled as such, weights.png with the
question and a colour bar that matches the cells; every file written atomically."""
import os

import pytest

pytest.importorskip("matplotlib")

from matplotlib.colorbar import Colorbar  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from oar_kernels.train import report  # noqa: E402


def _rows(evals=((0, 0.4), (10, 0.7)), steps=10, eval_size=500):
    rows = []
    for step, acc in evals[:1]:
        rows.append({"kind": "eval", "step": step, "eval_accuracy": acc, "eval_size": eval_size})
    for s in range(1, steps + 1):
        rows.append({"kind": "train", "step": s, "reward": 0.1 * s, "accuracy": 0.05 * s})
    for step, acc in evals[1:]:
        rows.append({"kind": "eval", "step": step, "eval_accuracy": acc, "eval_size": eval_size})
    return rows


def _held_out_lines(fig):
    return [ln for ln in fig.axes[0].lines if "held-out" in str(ln.get_label())]


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def _no_tmp(folder):
    return not [p for p in os.listdir(folder) if "tmp" in p]


def test_held_out_accuracy_is_points_without_a_line(tmp_path):
    figures = {}
    paths = report.plot_curves(_rows(), str(tmp_path), "oar-g", temperature=0.7, figures=figures)
    assert paths == [str(tmp_path / "reward.png"), str(tmp_path / "accuracy.png")]
    for p in paths:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert _no_tmp(tmp_path)
    fig = figures["accuracy.png"]
    held = _held_out_lines(fig)
    assert len(held) == 1
    line = held[0]
    assert line.get_linestyle() == "None" and line.get_marker() == "o"  # no line joins two evaluations
    assert list(line.get_xdata()) == [0, 10] and list(line.get_ydata()) == [0.4, 0.7]
    assert "500 problems" in line.get_label()
    # every point is annotated with its measured value
    assert {"0.400", "0.700"} <= set(_texts(fig))
    # the training curve is the sampled accuracy, labelled as such (not the reward)
    train = [ln for ln in fig.axes[0].lines if ln not in held]
    assert len(train) == 1
    assert "sampled training accuracy" in train[0].get_label() and "temperature 0.7" in train[0].get_label()
    assert max(train[0].get_ydata()) <= 0.5  # accuracy (0.05 a step), not reward (0.1 a step)
    # reward.png: per-step points and a moving average, axes labelled
    rfig = figures["reward.png"]
    styles = sorted((ln.get_linestyle(), ln.get_marker()) for ln in rfig.axes[0].lines)
    assert styles == [("-", "None"), ("None", ".")]
    assert rfig.axes[0].get_xlabel() == "optimizer step" and rfig.axes[0].get_ylabel() == "reward"


def test_eval_counts_differ_per_point_and_are_annotated():
    rows = [{"kind": "eval", "step": 0, "eval_accuracy": 0.5, "eval_size": 3},
            {"kind": "eval", "step": 4, "eval_accuracy": 1.0, "n": 2},
            {"kind": "eval", "step": 6, "eval_accuracy": None, "eval_size": 0}]  # not an evaluation
    assert report.eval_points(rows) == [(0, 0.5, 3), (4, 1.0, 2)]
    fig = report.accuracy_figure(rows)
    texts = _texts(fig)
    assert "0.500\n(n=3)" in texts and "1.000\n(n=2)" in texts


def test_no_eval_rows_draws_no_held_out_accuracy(tmp_path):
    rows = [r for r in _rows() if r["kind"] == "train"]
    rows.append({"kind": "eval", "step": 10, "eval_accuracy": 0.0, "eval_size": 0})  # 0 problems: no evaluation
    figures = {}
    paths = report.plot_curves(rows, str(tmp_path), figures=figures)
    fig = figures["accuracy.png"]
    assert not _held_out_lines(fig)
    assert all("held-out" not in str(ln.get_label()) for ln in fig.axes[0].lines)
    assert not any(t.startswith("0.000") for t in _texts(fig))
    assert "no held-out evaluation" in _texts(fig)
    assert paths == [str(tmp_path / "reward.png"), str(tmp_path / "accuracy.png")] and _no_tmp(tmp_path)
    # nothing at all: still honest
    fig = report.accuracy_figure([])
    assert not fig.axes[0].lines and "no held-out evaluation" in _texts(fig)


def _samples():
    toks = list("1 + 2 = 3\nThe answer is 3.")
    n = len(toks)
    return [{"prompt": "What is 1 + 2?\n", "reward": 1.0, "advantage": 0.5, "tokens": toks,
             "weights": [0.25 + 0.2 * i if i < 9 else 1.0 for i in range(n)], "reasoning": [i < 9 for i in range(n)]},
            {"prompt": "What is 7 - 5?\n", "reward": 0.0, "advantage": -0.5, "tokens": toks,
             "weights": [1.5] * 9 + [1.0] * (n - 9), "reasoning": [i < 9 for i in range(n)]}]


def test_weights_png_shows_the_question_and_a_matching_colour_bar(tmp_path):
    figures = {}
    path = tmp_path / "weights.png"
    report.plot_weights(_samples(), str(path), "OAR weights (test)", figures=figures)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _no_tmp(tmp_path)
    fig = figures["weights.png"]
    texts = _texts(fig)
    assert "Q: What is 1 + 2?" in texts and "Q: What is 7 - 5?" in texts
    # a colour bar whose range is the weights shown, and whose colours are the cells' colours
    bars = [ax for ax in fig.axes if isinstance(getattr(ax, "_colorbar", None), Colorbar)]
    assert len(bars) == 1
    bar = bars[0]._colorbar
    lo, hi = report.weight_scale(_samples())
    assert (bar.norm.vmin, bar.norm.vmax) == pytest.approx((lo, hi)) and lo == 0.25 and hi == pytest.approx(1.85)
    cells = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    s = _samples()[0]
    w0, w8 = s["weights"][0], s["weights"][8]  # most suppressed, most boosted
    by_colour = [to_rgb(p.get_facecolor()) for p in cells]
    for w in (w0, w8, 1.5):
        cell = report.weight_rgb(w, True, (lo, hi))
        assert any(c == pytest.approx(cell, abs=1e-6) for c in by_colour)
        assert to_rgb(bar.cmap(bar.norm(w))) == pytest.approx(cell, abs=0.02)
    assert to_rgb(bar.cmap(bar.norm(lo)))[0] > 0.8 > to_rgb(bar.cmap(bar.norm(lo)))[1]  # red end
    assert to_rgb(bar.cmap(bar.norm(hi)))[1] > to_rgb(bar.cmap(bar.norm(hi)))[0]  # green end
    assert any(to_rgb(p.get_facecolor()) == pytest.approx(report.GREY) for p in cells)  # not reasoning
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert labels == ["not reasoning (w = 1)"]


def test_weights_html_uses_the_same_colours_and_scale(tmp_path):
    path = tmp_path / "weights.html"
    samples = _samples()
    report.write_weights_html({3: samples}, str(path), "OAR weights (test)")
    page = path.read_text()
    assert _no_tmp(tmp_path)
    assert "boosted" in page and "suppressed" in page and "not reasoning" in page
    scale = report.weight_scale(samples)
    # the boosted cells of the two responses share one scale: the same weight, the same colour
    assert f"style='{report._colour(1.5, True, scale)}' title='w=1.500'" in page
    assert report._colour(1.85, True, scale) == "background:rgba(0,160,60,0.90)"
    assert report._colour(0.25, True, scale) == "background:rgba(220,40,40,0.90)"
    assert "What is 7 - 5?" in page and "0.25" in page and "1.85" in page  # the legend's range
    report.write_weights_html({}, str(path))
    assert "No weighted responses" in path.read_text()


def test_a_failed_save_leaves_the_old_file_and_no_tmp(tmp_path, monkeypatch):
    report.plot_curves(_rows(), str(tmp_path))
    before = (tmp_path / "accuracy.png").read_bytes()

    def boom(self, fname, *a, **k):
        with open(fname, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(OSError, match="disk full"):
        report.plot_curves(_rows(evals=((0, 0.1),)), str(tmp_path))
    with pytest.raises(OSError, match="disk full"):
        report.plot_weights(_samples(), str(tmp_path / "weights.png"))
    assert (tmp_path / "accuracy.png").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["accuracy.png", "reward.png"]


def test_moving_average():
    assert report.moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    assert report.moving_average([], 3) == []
