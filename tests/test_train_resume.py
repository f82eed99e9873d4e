"""No run lost or silently changed: Ctrl-C and SIGKILL (also in the middle of a checkpoint
write) resume to the same metrics as an uninterrupted run; a resumed run keeps its saved
configuration; a new run never replaces another one silently."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

from oar_kernels.train import ConfigError, from_dict, train
from oar_kernels.train.__main__ import main
from tiny_models import metrics_rows as rows_of, trainer_settings

TIME_KEYS = {"time_rollout", "time_importance", "time_step"}
QUIET = dict(log=lambda *a: None)


def settings(model, out, **over):
    return trainer_settings(model, out, **{"max_steps": 6, "save_steps": 2, **over})


def argv_of(values):
    return [x for k, v in values.items() for x in (f"--{k}", str(v))]


def assert_same_run(ref, out):
    """Every metric of every step equal (losses, gradient norms, weight spread included), and the
    compared metrics informative (weights not all 1, gradient norms not all equal; an on-policy
    loss is about 0 by construction)."""
    a, b = rows_of(ref), rows_of(out)
    assert [r["step"] for r in b] == [r["step"] for r in a]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key in set(ra) - TIME_KEYS:
            if isinstance(ra[key], float):
                assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), (ra["step"], key)
            else:
                assert ra[key] == rb[key], (ra["step"], key)
    assert any(r["weight_std"] > 0 for r in a) and len({round(r["grad_norm"], 6) for r in a}) > 2
    assert rows_of(ref, "eval") == rows_of(out, "eval")


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(tiny_model, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "cut"
    train(from_dict(settings(tiny_model, ref, save_steps=0)), **QUIET)

    def ctrl_c(step):
        if step == 1:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: finish the step, checkpoint, exit

    summary = train(from_dict(settings(tiny_model, out, save_steps=0)), step_hook=ctrl_c, **QUIET)
    assert summary["interrupted"] and summary["steps"] == 1
    assert os.listdir(out / "checkpoints") == ["step-0000001.pt"]
    summary = train(from_dict(settings(tiny_model, out, save_steps=0, resume_from_checkpoint="last")), **QUIET)
    assert summary["resumed_from"].endswith("step-0000001.pt")
    assert_same_run(ref, out)


KILLER = textwrap.dedent('''
    """Runs the trainer CLI and SIGKILLs itself: in the middle of the Nth checkpoint write
    (half the bytes written) or right after the Nth optimizer step (before its metrics row)."""
    import io, os, signal, sys
    import torch

    where, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    real_save, saves = torch.save, [0]

    def save(obj, f, *a, **k):
        saves[0] += 1
        if where == "save" and saves[0] == nth:
            buf = io.BytesIO()
            real_save(obj, buf, *a, **k)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **k)

    torch.save = save
    from oar_kernels.train import loop

    real_step = loop.train_step

    def step(run, i):
        row = real_step(run, i)
        if where == "step" and i + 1 == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return row

    loop.train_step = step
    from oar_kernels.train.__main__ import main
    sys.exit(main(argv))
''')


@pytest.mark.parametrize("where, nth, last_complete", [("save", 2, 2), ("step", 5, 4)])
def test_sigkill_resumes_from_the_last_complete_checkpoint_to_the_same_metrics(tiny_model, tmp_path, where, nth,
                                                                               last_complete):
    """save: killed while writing the step-4 checkpoint (half written); step: killed in step 5.
    Both resume from the last complete checkpoint and end with the uninterrupted run's metrics."""
    ref, out = tmp_path / "ref", tmp_path / "killed"
    train(from_dict(settings(tiny_model, ref)), **QUIET)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), where, str(nth), *argv_of(settings(tiny_model, out))],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    names = sorted(os.listdir(out / "checkpoints"))
    assert max(n for n in names if n.endswith(".pt")) == f"step-{last_complete:07d}.pt"
    if where == "save":
        assert any(".tmp-" in n for n in names)  # the cut write is left behind ...
        assert len(rows_of(out)) == 4  # ... and metrics of steps the checkpoint does not have
    # resume with nothing but the folder: the saved configuration does the rest
    assert main(["--output_dir", str(out), "--resume_from_checkpoint", "last"]) == 0
    assert not [n for n in os.listdir(out / "checkpoints") if ".tmp-" in n]
    assert_same_run(ref, out)


def test_resume_restores_the_saved_configuration(tiny_model, tmp_path, capsys):
    """A GRPO run on a JSONL data set resumed with only --output_dir continues as GRPO on that file;
    a flag that changes the run is an error naming it; max_steps may change (with a notice)."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(40)))
    out = tmp_path / "run"
    values = settings(tiny_model, out, algo="grpo", dataset=str(data), max_steps=2)
    assert main(argv_of(values)) == 0
    capsys.readouterr()
    assert main(["--output_dir", str(out), "--resume_from_checkpoint", "last", "--algo", "oar-g"]) == 2
    err = capsys.readouterr().err
    assert "algo: the run being resumed was started with algo='grpo'" in err
    assert main(["--output_dir", str(out), "--resume_from_checkpoint", "last", "--max_steps", "3"]) == 0
    captured = capsys.readouterr()
    assert "max_steps changed from 2 to 3" in captured.out
    with open(out / "config.yaml") as f:
        saved = yaml.safe_load(f)
    assert (saved["algo"], saved["dataset"], saved["max_steps"]) == ("grpo", str(data), 3)
    assert saved["resume_from_checkpoint"] is None  # --config config.yaml starts a new run, not a resume
    rows = rows_of(out)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["oar_responses"] == 0  # still GRPO
    # the first run's final evaluation stays (a real measurement at step 2); the same held-out slice
    assert [(r["step"], r["eval_size"]) for r in rows_of(out, "eval")] == [(0, 4), (2, 4), (3, 4)]
    # the Python API: keys that differ from the defaults count as given
    with pytest.raises(ConfigError, match="^learning_rate:"):
        train(from_dict(settings(tiny_model, out, algo="grpo", dataset=str(data), learning_rate=5e-4,
                                 resume_from_checkpoint="last")), **QUIET)


def test_a_new_run_never_replaces_a_run_silently(tiny_model, tmp_path):
    out = tmp_path / "run"
    train(from_dict(settings(tiny_model, out, max_steps=1)), **QUIET)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="^output_dir: .* is not empty"):
        train(from_dict(settings(tiny_model, out, max_steps=2)), **QUIET)
    assert (out / "metrics.jsonl").read_text() == before and os.listdir(out / "checkpoints")
    (out / "notes.txt").write_text("mine")
    train(from_dict(settings(tiny_model, out, max_steps=2, overwrite_output_dir=True)), **QUIET)
    assert [r["step"] for r in rows_of(out)] == [1, 2]
    assert sorted(os.listdir(out / "checkpoints")) == ["step-0000002.pt"]
    assert (out / "notes.txt").read_text() == "mine"  # only the trainer's own outputs are replaced


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(ConfigError, match="^resume_from_checkpoint: no complete checkpoint"):
        train(from_dict({"output_dir": str(tmp_path / "none"), "resume_from_checkpoint": "last"}), **QUIET)
