"""Bad input fails before any work with one line naming the option; data problems are reported
with line numbers; a data set without held-out rows is said so and never gets an accuracy."""
import json
import os
import subprocess
import sys
import time

import pytest

from oar_kernels.train import ConfigError, from_dict, train
from oar_kernels.train.__main__ import main
from oar_kernels.train.policy import check_model_source


def _cli(args, env_extra=None, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "oar_kernels.train", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.time() - t


def test_missing_model_folder_is_one_line_naming_the_option(tmp_path):
    out = tmp_path / "run"
    proc, _ = _cli(["--model", str(tmp_path / "no-such-model"), "--output_dir", str(out)])
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip() and "Warning" not in l]
    assert lines == [f"oar_kernels.train: config error: model: no model folder {str(tmp_path / 'no-such-model')!r} "
                     "(and not a hub id of the form NAME or ORG/NAME)"], proc.stderr
    assert not out.exists()  # no work done, nothing written
    with pytest.raises(ConfigError, match="^model: .*without config.json"):
        check_model_source(str(tmp_path))  # a folder, but not a model


def test_hub_id_while_offline_fails_at_once(tmp_path):
    proc, seconds = _cli(["--model", "some-org/not-cached-model", "--output_dir", str(tmp_path / "run")],
                         env_extra={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "model: 'some-org/not-cached-model' is not a local folder and not in the hub cache" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert seconds < 45  # interpreter and imports only; no network wait


def test_unreachable_hub_is_reported_without_a_long_wait(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    seen = {}

    def no_network(self, repo_id, timeout=None, **kw):
        seen["timeout"] = timeout
        raise ConnectionError("name resolution failed")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    with pytest.raises(ConfigError, match=r"^model: cannot reach the hub to download 'org/m' \(ConnectionError\)"):
        check_model_source("org/m")
    assert seen["timeout"] is not None and seen["timeout"] <= 10


def _write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")


def test_skipped_rows_and_the_real_held_out_count_are_reported(tiny_model, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(12)]
    rows[2] = {"question": "What is 0?"}
    rows[5] = "{not json"
    _write_jsonl(data, rows)
    lines = []
    train(from_dict(dict(model=tiny_model, dataset=str(data), output_dir=str(tmp_path / "run"), max_steps=1,
                         prompts_per_step=2, num_generations=2, max_completion_length=8, eval_size=500,
                         progress=False, num_threads=1, algo="grpo")), log=lines.append)
    text = "\n".join(lines)
    assert "skipped 2 of 12 rows" in text and "line 3: no answer field" in text and "line 6: not valid JSON" in text
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        evals = [r for r in map(json.loads, f) if r["kind"] == "eval"]
    n = evals[0]["eval_size"]
    assert 1 <= n < 10 and f"({n} problems" in text and "(500 problems" not in text


def test_no_held_out_row_means_no_accuracy(tiny_model, tmp_path):
    data = tmp_path / "one.jsonl"
    _write_jsonl(data, [{"question": "What is 2 + 2?", "answer": "4"}, {"question": "Broken"}])
    lines = []
    out = tmp_path / "run"
    summary = train(from_dict(dict(model=tiny_model, dataset=str(data), output_dir=str(out), max_steps=1,
                                   prompts_per_step=2, num_generations=2, max_completion_length=8, progress=False,
                                   num_threads=1, algo="grpo")), log=lines.append)
    text = "\n".join(lines)
    assert "no held-out problems" in text and "held-out accuracy:" not in text and "0.000" not in text
    assert summary["accuracy_before"] is None and summary["accuracy_after"] is None and summary["eval_size"] == 0
    with open(out / "metrics.jsonl") as f:
        assert not [r for r in map(json.loads, f) if r["kind"] == "eval"]


def test_bad_dataset_spec_is_a_clear_error(tmp_path, capsys):
    assert main(["--dataset", str(tmp_path / "missing.jsonl"), "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset" in err[0] and "missing.jsonl" in err[0]
