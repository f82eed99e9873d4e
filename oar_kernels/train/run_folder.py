"""The run folder: a new run never replaces another one silently, and a resumed run continues
exactly the run it names (its saved configuration, checked against what the user passed)."""
from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Callable, Dict, Optional, Set, Tuple

from . import checkpoint as ckpt
from .config import FIELD_NAMES, MUTABLE_ON_RESUME, ConfigError, TrainConfig, _truthy, from_dict

# what a run writes into its folder (removed by overwrite_output_dir; anything else is left alone)
OUTPUTS = ("metrics.jsonl", "config.yaml", "summary.json", "checkpoints", "final", "final.tmp", "reward.png",
           "accuracy.png", "weights.png", "weights.html")


def check_new_run_folder(cfg: TrainConfig) -> None:
    """A new run's output_dir must be empty or absent, unless overwrite_output_dir."""
    out = cfg.resolved_output_dir()
    entries = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if entries and not cfg.overwrite_output_dir:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ConfigError(f"output_dir: {out!r} is not empty ({shown}); continue its run with "
                          "--resume_from_checkpoint last, replace it with --overwrite_output_dir, or pick another "
                          "--output_dir")


def clear_outputs(out: str) -> None:
    """overwrite_output_dir: removes what an earlier run wrote (only the trainer's own outputs)."""
    for name in OUTPUTS:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def find_checkpoint(cfg: TrainConfig) -> str:
    """The checkpoint file resume_from_checkpoint names: 'last'/true -> the newest complete one in
    output_dir/checkpoints; a file; a folder -> its newest."""
    value = cfg.resume_from_checkpoint
    folder = os.path.join(cfg.resolved_output_dir(), "checkpoints") if _truthy(value) else value
    if os.path.isfile(folder):
        return folder
    if os.path.isdir(os.path.join(folder, "checkpoints")):
        folder = os.path.join(folder, "checkpoints")
    found = ckpt.latest_checkpoint(folder) if os.path.isdir(folder) else None
    if found is None:
        raise ConfigError(f"resume_from_checkpoint: no complete checkpoint in {folder!r} (a run killed before its "
                          "first checkpoint starts again with --overwrite_output_dir)")
    return found


def _saved_config(state: Dict[str, Any], path: str) -> TrainConfig:
    if not isinstance(state.get("config"), dict):
        raise ConfigError(f"resume_from_checkpoint: {path!r} holds no configuration (not a checkpoint of this trainer)")
    try:
        return from_dict(state["config"])
    except ConfigError as err:
        raise ConfigError(f"resume_from_checkpoint: the configuration saved in {path!r} is not valid today: "
                          f"{err}") from None


def restore_config(cfg: TrainConfig, given: Optional[Set[str]], log: Callable[[str], None]
                   ) -> Tuple[TrainConfig, str, Dict[str, Any]]:
    """(the resumed run's configuration, checkpoint path, checkpoint state).

    given: the keys the user set (None, from the Python API: the keys that differ from the
    defaults). A given key whose value differs from the saved one is an error naming it, except
    MUTABLE_ON_RESUME keys, which are taken with a logged notice.
    """
    path = find_checkpoint(cfg)
    state = ckpt.load_checkpoint(path)
    saved = _saved_config(state, path)
    defaults = TrainConfig()
    if given is None:
        given = {k for k in FIELD_NAMES if getattr(cfg, k) != getattr(defaults, k)}
    changes = {}
    for key in sorted(given - {"output_dir", "resume_from_checkpoint", "overwrite_output_dir"}):
        new, old = getattr(cfg, key), getattr(saved, key)
        if new == old:
            continue
        if key not in MUTABLE_ON_RESUME:
            raise ConfigError(f"{key}: the run being resumed was started with {key}={old!r}; resuming it with "
                              f"{new!r} would silently change it (leave {key} out, or start a new run in another "
                              "output_dir)")
        changes[key] = new
        log(f"[oar] resume: {key} changed from {old!r} to {new!r}")
    folder = os.path.dirname(os.path.abspath(path))
    out = os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else cfg.resolved_output_dir()
    if "output_dir" in given and cfg.output_dir:
        out = cfg.output_dir
    restored = dataclasses.replace(saved, **changes, output_dir=out, resume_from_checkpoint=path,
                                   overwrite_output_dir=False)
    return restored, path, state
