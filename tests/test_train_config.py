"""The trainer's configuration: HfArgumentParser flags (both spellings), config files (YAML's
1e-5 as a number, TOML), TRL's option names with the old ones as deprecated aliases, one
default per option in --help, and errors that start with the key."""
import argparse
import io
import re
import warnings
from contextlib import redirect_stdout
from dataclasses import fields

import pytest
import torch

from oar_kernels.train.config import (RENAMED, ConfigError, TrainConfig, build_parser, from_dict, parse_args,
                                      parse_args_and_given)

FIELDS = [f.name for f in fields(TrainConfig)]


def _help() -> str:
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit):
        parse_args(["--help"])
    return buf.getvalue()


def test_every_flag_takes_both_spellings():
    parser = build_parser()
    options = {s for a in parser._actions for s in a.option_strings}
    for name in FIELDS:
        assert f"--{name}" in options and f"--{name.replace('_', '-')}" in options, name
    a = parse_args(["--oar-beta", "2", "--num-generations", "4", "--max_steps", "3", "--no-progress"])
    assert (a.oar_beta, a.num_generations, a.max_steps, a.progress) == (2.0, 4, 3, False)
    assert parse_args(["--sum_to_len", "false"]).sum_to_len is False
    assert parse_args(["--epsilon_high", "0.28"]).epsilon_high == 0.28
    assert parse_args(["--epsilon_high", "none"]).epsilon_high is None


def test_yaml_reads_1e_minus_5_as_a_number_and_toml_works(tmp_path):
    (tmp_path / "c.yaml").write_text("learning_rate: 1e-5\nweight_decay: 1e-2\nepsilon_high: null\nmax_steps: 7\n")
    cfg = parse_args(["--config", str(tmp_path / "c.yaml")])
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float) and cfg.weight_decay == 0.01
    assert cfg.max_steps == 7 and cfg.epsilon_high is None
    assert from_dict({"learning_rate": "3e-4"}).learning_rate == 3e-4
    (tmp_path / "c.toml").write_text('learning_rate = 1e-5\nloss_type = "dr_grpo"\n')
    cfg = parse_args(["--config", str(tmp_path / "c.toml"), "--loss-type", "bnpo"])
    assert (cfg.learning_rate, cfg.loss_type) == (1e-5, "bnpo")  # flags override the file


def test_help_shows_one_default_per_option_and_the_allowed_values():
    text = _help()
    blocks = re.split(r"\n  (?=--)", text)
    for name in FIELDS:
        block = next(b for b in blocks if b.startswith(f"--{name} ") or b.startswith(f"--{name},")
                     or b.startswith(f"--{name}\n"))
        assert block.count("(default:") == 1, block
    for name in ("algo", "loss_type", "lr_scheduler_type", "scale_rewards", "dtype"):
        hint = TrainConfig.__annotations__[name]
        values = re.findall(r"'([^']+)'", str(hint))
        assert "{" + ",".join(values) + "}" in text, name
    assert "--no_progress" in text and "--no-progress" in text


def test_trl_names_and_deprecated_aliases(tmp_path):
    for name in ("lr_scheduler_type", "save_steps", "eval_steps", "save_total_limit", "resume_from_checkpoint",
                 "overwrite_output_dir", "generation_batch_size", "num_iterations"):
        assert name in FIELDS
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = parse_args(["--save_every", "3", "--eval-every=2"])
    assert (cfg.save_steps, cfg.eval_steps) == (3, 2)
    messages = [str(w.message) for w in seen if issubclass(w.category, FutureWarning)]
    assert any(m.startswith("save_every is deprecated") and "save_steps" in m for m in messages)
    assert any(m.startswith("eval_every is deprecated") and "eval_steps" in m for m in messages)
    with pytest.warns(FutureWarning, match="resume"):
        assert parse_args(["--resume"]).resume_from_checkpoint == "last"
    (tmp_path / "old.yaml").write_text("keep_checkpoints: 5\nlr_scheduler: cosine\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = parse_args(["--config", str(tmp_path / "old.yaml")])
    assert {str(w.message).split()[0] for w in seen} == {"keep_checkpoints", "lr_scheduler"}
    assert (cfg.save_total_limit, cfg.lr_scheduler_type) == (5, "cosine")
    with pytest.warns(FutureWarning):
        assert from_dict({"resume": True}).resume_from_checkpoint == "last"
    for value, want in (("true", "last"), ("false", None), (True, "last"), (False, None), ("none", None),
                        ("last", "last"), ("runs/x/checkpoints/step-0000004.pt", "runs/x/checkpoints/step-0000004.pt")):
        assert from_dict({"resume_from_checkpoint": value}).resume_from_checkpoint == want, value
    assert parse_args(["--resume_from_checkpoint", "false"]).resume_from_checkpoint is None
    assert set(RENAMED.values()) <= set(FIELDS)


def test_given_keys_are_what_the_user_set(tmp_path):
    (tmp_path / "c.yaml").write_text("tau: 0.4\n")
    cfg, given = parse_args_and_given(["--config", str(tmp_path / "c.yaml"), "--max-steps", "5", "--no_progress"])
    assert given == {"tau", "max_steps", "progress"}
    assert parse_args_and_given([])[1] == set()


@pytest.mark.parametrize("argv, key", [
    (["--taux", "1"], "taux"), (["--algo", "ppo"], "algo"), (["--tau", "x"], "tau"),
    (["--generation_batch_size", "6"], "generation_batch_size"), (["--num_iterations", "0"], "num_iterations"),
    (["--warmup_steps", "3"], "warmup_steps"), (["--lr_scheduler_type", "linear_warmup"], "lr_scheduler_type"),
])
def test_bad_flags_name_the_key_first(argv, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        parse_args(argv)


def test_unknown_key_suggests_the_close_name(tmp_path):
    with pytest.raises(ConfigError, match=r"^taux: unknown flag \(did you mean tau\?\)"):
        parse_args(["--taux", "1"])
    (tmp_path / "c.yaml").write_text("learning_rat: 1e-5\n")
    with pytest.raises(ConfigError, match=r"^learning_rat: unknown config key \(did you mean learning_rate"):
        parse_args(["--config", str(tmp_path / "c.yaml")])


@pytest.mark.parametrize("kind, warmup", [("linear", 2), ("cosine", 3), ("constant_with_warmup", 2), ("constant", 0)])
def test_schedules_are_transformers_get_scheduler(kind, warmup):
    """make_optimizer's learning rates equal the closed forms of transformers' schedules."""
    import math

    from oar_kernels.train.update import make_optimizer

    cfg = from_dict({"lr_scheduler_type": kind, "warmup_steps": warmup, "max_steps": 10, "learning_rate": 1.0})
    opt, sched = make_optimizer(torch.nn.Linear(2, 2), cfg)
    got = []
    for _ in range(10):
        got.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()

    def expected(s):
        if s < warmup:
            return s / warmup
        frac = (s - warmup) / (10 - warmup)
        return {"linear": 1 - frac, "cosine": 0.5 * (1 + math.cos(math.pi * frac)),
                "constant_with_warmup": 1.0, "constant": 1.0}[kind]

    assert got == pytest.approx([expected(s) for s in range(10)], abs=1e-9)


def test_config_file_parses_no_argv_defaults_into_given(tmp_path):
    """A value equal to the default but written in the file still counts as given (resume checks it)."""
    (tmp_path / "c.yaml").write_text("algo: oar-g\n")
    assert parse_args_and_given(["--config", str(tmp_path / "c.yaml")])[1] == {"algo"}


def test_parser_is_transformers_hfargumentparser():
    from transformers import HfArgumentParser

    assert isinstance(build_parser(), HfArgumentParser)
    assert isinstance(build_parser(), argparse.ArgumentParser)
