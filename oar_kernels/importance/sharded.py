"""Scoring a policy sharded with FSDP2: its full parameters held for the importance estimators."""
from __future__ import annotations

import contextlib


def has_fsdp1_units(module) -> bool:
    """Whether `module` holds FSDP1 (FullyShardedDataParallel) units, which this cannot serve."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1
    except ImportError:  # pragma: no cover
        return False
    return any(isinstance(m, FSDP1) for m in module.modules())


@contextlib.contextmanager
def full_parameters(module):
    """FSDP2: every shard unit's full parameters held for the block, with no collective inside it.

    Used around the importance estimators on a sharded policy (the trainer under --fsdp, the
    verl plugin's actor). They call the embeddings, the decoder body and the LM head directly and
    run a data-dependent number of forwards per rank (batches are cut by token budgets), so
    per-layer all-gathers inside them would not match across ranks: one unshard of every unit
    before (the same collectives on every rank), no resharding inside, each unit's own
    resharding restored after. A module without FSDP2 units is yielded as is. FSDP1 is refused
    (its summon_full_params forbids forwards).
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        FSDPModule = ()
    if has_fsdp1_units(module):
        raise ValueError("module: OAR scores with FSDP2's full parameters (torch.distributed.fsdp.fully_shard); "
                         "FSDP1 (FullyShardedDataParallel) units are not supported")
    units = [m for m in module.modules() if FSDPModule and isinstance(m, FSDPModule)]
    # FSDP2 takes as its root the first unit that runs forward: our estimators call the layers
    # directly, so settle the root (the outermost units) before, as the root's forward would
    inner = {id(m) for u in units for m in u.modules() if m is not u}
    for u in units:
        state = getattr(u, "_get_fsdp_state", lambda: None)()
        if id(u) not in inner and hasattr(state, "_lazy_init"):
            state._lazy_init()
    saved = []
    for u in units:
        group = getattr(getattr(u, "_get_fsdp_state", lambda: None)(), "_fsdp_param_group", None)
        saved.append((getattr(group, "post_forward_mesh_info", None), getattr(group, "reshard_after_backward", True),
                      group))
        u.unshard()
        u.set_reshard_after_forward(False, recurse=False)
        u.set_reshard_after_backward(False, recurse=False)
    try:
        yield module
    finally:
        for u, (post_forward, after_backward, group) in zip(units, saved):
            if group is not None and hasattr(group, "post_forward_mesh_info"):
                group.post_forward_mesh_info = post_forward
                group.reshard_after_backward = after_backward
            else:  # pragma: no cover - a torch whose FSDP2 state moved
                u.set_reshard_after_forward(True, recurse=False)
                u.set_reshard_after_backward(True, recurse=False)
            u.reshard()
