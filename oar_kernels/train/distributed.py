"""Processes and parallel wrapping: the process group, devices and CPU threads, DDP / FSDP2,
and the full state dicts a checkpoint holds.

Data parallel runs (torchrun) split each generation batch's prompts over the processes;
advantages are computed on the gathered rewards and losses normalised by the whole step's
counts, so N processes follow the same curve as one with the same global batch and seed.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .config import TrainConfig


# -- processes -----------------------------------------------------------------------------

class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False

    def init(self, device: torch.device):
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, op))
        return t

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        out = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(out, t)
        return torch.cat(out)

    def gather_objects(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every process (a checkpoint's per-process rollouts)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self):
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def set_cpu_threads(cfg: TrainConfig, dist: Dist) -> int:
    """torch CPU threads: cfg.num_threads, or the cores left free by other work (at least 1)."""
    n = cfg.num_threads
    if n == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = max(1, min(torch.get_num_threads(), int(cores - round(busy))) // dist.world)
    torch.set_num_threads(n)
    return n


def resolve_device(cfg: TrainConfig, dist: Dist) -> torch.device:
    if cfg.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())
        return torch.device("cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {cfg.device!r} requested but CUDA is not available")
    if cfg.device == "cuda" and dist.enabled:
        return torch.device("cuda", dist.local_rank)
    return torch.device(cfg.device)


def wrap_parallel(model, cfg: TrainConfig, dist: Dist, device: torch.device):
    """The module the loss runs through: DDP, FSDP2 (cfg.fsdp) or the model itself."""
    if not dist.enabled:
        return model
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        layers = getattr(getattr(model, "model", None), "layers", None) or []
        for layer in layers:
            fully_shard(layer, reshard_after_forward=True)
        fully_shard(model, reshard_after_forward=False)  # the root's states are needed first in backward
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def model_state(model, cfg: TrainConfig, dist: Dist):
    if dist.enabled and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def optim_state(model, opt, cfg: TrainConfig, dist: Dist):
    if dist.enabled and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def load_optim_state(model, opt, optim_state_dict, cfg: TrainConfig, dist: Dist):
    if dist.enabled and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, opt, optim_state_dict, options=StateDictOptions(full_state_dict=True))
    else:
        opt.load_state_dict(optim_state_dict)


def no_sync(wrapped, cfg: TrainConfig, dist: Dist, sync: bool):
    """DDP: skip the gradient all-reduce on all but the last micro-batch (FSDP2 and one process:
    nothing to skip)."""
    if dist.enabled and not cfg.fsdp and not sync:
        return wrapped.no_sync()
    return contextlib.nullcontext()


@contextlib.contextmanager
def full_parameters(model, cfg: TrainConfig, dist: Dist):
    """FSDP2 (--fsdp over several processes): every shard unit's full parameters held for the
    block, with no collective inside it (importance.sharded.full_parameters: the importance
    functions call the layers directly and run a data-dependent number of forwards per process).
    Memory: the whole model on each process during importance scoring."""
    if not (dist.enabled and cfg.fsdp):
        yield
        return
    from ..importance.sharded import full_parameters as sharded

    with sharded(model):
        yield