"""Run under torchrun (2 CPU processes, gloo) by test_verl_plugin.py: OAR scoring on an FSDP2-sharded
tiny model inside oar_kernels.integrations.verl.full_parameters equals scoring on the unsharded
model, with a different number of rows (so of forwards) on each rank, and the sharding and
resharding behaviour is back afterwards (a normal forward and backward still run on every rank).
Then the two processes act as one sequence-parallel group (the same rows on both, as verl's
dispatch hands them out): each row is scored once, on one of them, and both return every row's
weights."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

from oar_kernels.integrations.verl import OARSettings, full_parameters, score_rows  # noqa: E402
from tiny_models import make_tokenizer  # noqa: E402
from verl_fixtures import LocalScorer, make_rows, tiny_policy, verl_batch  # noqa: E402


class SequenceParallelScorer(LocalScorer):
    def _oar_parallel(self):
        return dist.get_rank(), dist.get_world_size(), None  # None: the default group


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    tok = make_tokenizer()
    rows = make_rows()
    mine = rows[:-1] if rank == 0 else rows[-1:]  # data-dependent work: 7 rows on rank 0, 1 on rank 1
    prompts = [torch.tensor(p) for p, _, _, _ in mine]
    responses = [torch.tensor(r) for _, r, _, _ in mine]
    nonzero = [a != 0 for _, _, a, _ in mine]
    reference = tiny_policy()
    model = tiny_policy()
    for layer in model.model.layers:
        fully_shard(layer, reshard_after_forward=True)
    fully_shard(model, reshard_after_forward=False)
    for algo, mode in (("oar-p", "answer_mean"), ("oar-g", "answer_joint"), ("oar-g", "answer_mean")):
        settings = OARSettings.from_config({"algo": algo, "pfinal_mode": mode, "max_batch_tokens": 96})
        with full_parameters(model) as m:
            got = score_rows(m, tok, prompts, responses, settings, nonzero,
                             generator=torch.Generator().manual_seed(11))
        want = score_rows(reference, tok, prompts, responses, settings, nonzero,
                          generator=torch.Generator().manual_seed(11))
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0, msg=f"{algo} {mode} rank {rank}")
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
        assert any(bool((w != 1).any()) for w in got[0]), "nothing was scored"
    # each unit's resharding is back: layers reshard after forward, the root does not
    groups = [u._get_fsdp_state()._fsdp_param_group for u in (*model.model.layers, model)]
    assert all(g.post_forward_mesh_info is not None for g in groups[:-1]) and groups[-1].post_forward_mesh_info is None
    assert all(type(p).__name__ == "DTensor" for p in model.parameters())
    # and the collectives are balanced: a normal sharded forward and backward run on both ranks
    model.train()
    model(input_ids=torch.tensor([rows[rank][0]])).logits.float().pow(2).mean().backward()
    dist.barrier()

    # a sequence-parallel group of two: same batch on both ranks, each row scored on one of them
    scored = []
    from oar_kernels.importance import scoring  # what the worker's scoring calls

    real = scoring.perturbation_importance

    def counting(model, segments, **kw):
        scored.append(len(segments))
        return real(model, segments, **kw)

    scoring.perturbation_importance = counting
    settings = {"algo": "oar-p", "pfinal_mode": "last"}
    sp = SequenceParallelScorer(model=reference)
    sp.oar_configure(settings)
    batch = verl_batch(rows)
    out = sp.oar_score(batch)
    scoring.perturbation_importance = real
    alone = LocalScorer(model=reference)
    alone.oar_configure(settings)
    whole = alone.oar_score(batch)
    total = int((whole.batch["oar_status"] == 0).sum())
    counts = [None, None]
    dist.all_gather_object(counts, sum(scored))
    assert sum(counts) == total and all(0 < c < total for c in counts), (counts, total)
    assert torch.equal(out.batch["oar_status"], whole.batch["oar_status"])
    # float32 batching round-off only (each rank batches a different subset of rows)
    torch.testing.assert_close(out.batch["oar_weights"], whole.batch["oar_weights"], atol=2e-3, rtol=0)
    print(f"ok rank {rank}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
