"""Atomic checkpoints: written to a temporary file in the same folder, fsync'ed, then
os.replace'd, so a kill at any moment leaves the previous checkpoints complete.

A checkpoint holds the model, optimizer and scheduler states, the RNG states (python, numpy,
torch, CUDA), the step, the data position, the run's configuration and, between two updates
on one generation batch (num_iterations > 1), that batch, so `--resume_from_checkpoint`
continues exactly.
"""
from __future__ import annotations

import glob
import os
import random
import re
from typing import Any, Dict, Optional

import numpy as np
import torch

_NAME = re.compile(r"step-(\d+)\.pt$")


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(folder: str, step: int, state: Dict[str, Any], keep: int = 2) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"step-{step:07d}.pt")
    atomic_torch_save({**state, "step": step}, path)
    for old in list_checkpoints(folder)[:-keep]:
        try:
            os.remove(old)
        except OSError:
            pass
    return path


def remove_partial_writes(folder: str) -> int:
    """Deletes the temporary files of checkpoint writes a kill cut short; returns how many."""
    partial = glob.glob(os.path.join(folder, "step-*.pt.tmp-*"))
    for path in partial:
        try:
            os.remove(path)
        except OSError:
            pass
    return len(partial)


def list_checkpoints(folder: str):
    found = [(int(_NAME.search(p).group(1)), p) for p in glob.glob(os.path.join(folder, "step-*.pt"))
             if _NAME.search(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str) -> Optional[str]:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: str) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
