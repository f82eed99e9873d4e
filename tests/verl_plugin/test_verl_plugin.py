"""The verl plugin (oar_kernels/integrations/verl.py) on CPU, against verl 0.9.1 itself.

Skipped where verl is not importable (the main test environment: verl pins transformers below
the newest the project allows); scripts/test_verl.sh builds the environment and runs them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("verl")

from verl.protocol import DataProto  # noqa: E402

from oar_kernels.integrations import verl as oar_verl  # noqa: E402
from oar_kernels.integrations.verl import OARSettings, apply_oar_weights, noise_seed  # noqa: E402
from verl_fixtures import (  # noqa: E402
    LocalScorer,
    TinyOARWorker,
    expected_weights,
    make_rows,
    nested_batch,
    tiny_policy,
    verl_batch,
    weights_as_rows,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


# --------------------------------------------------------------------------------------
# the entry point


def _run_python(code: str, **env):
    full = dict(os.environ, **env)
    full.pop("VERL_USE_EXTERNAL_MODULES", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=str(HERE), env=full,
                          capture_output=True, text=True, timeout=300)


PROBE = """
    import sys
    import verl
    loaded = "oar_kernels.integrations.verl" in sys.modules
    from verl.trainer.ppo.v1 import get_trainer_cls
    try:
        cls = get_trainer_cls("oar")
        print(loaded, f"{cls.__module__}.{cls.__name__}")
    except ValueError:
        print(loaded, None)
"""


def test_import_verl_alone_registers_the_plugin():
    out = _run_python(PROBE)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "oar_kernels.integrations.verl.OARTrainer"], out.stdout + out.stderr[-2000:]


def test_without_the_entry_point_there_is_no_oar_trainer():
    # the negative control of the test above: verl's switch that skips entry-point plugins
    out = _run_python(PROBE, VERL_USE_EXTERNAL_PLUGINS="none")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "None"], out.stdout


def test_the_entry_point_is_declared():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="verl.plugins") if ep.value == "oar_kernels.integrations.verl"]
    assert len(eps) == 1, list(entry_points(group="verl.plugins"))


# --------------------------------------------------------------------------------------
# settings


def test_unknown_key_names_it_and_lists_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        OARSettings.from_config({"algo": "oar-p", "betta": 1.0})
    msg = str(err.value)
    assert msg.startswith("oar.betta: unknown OAR key")
    for key in OARSettings.keys():
        assert key in msg.split("allowed keys:")[1]


@pytest.mark.parametrize("key,value", [("algo", "oar-q"), ("tau", 1.5), ("beta", -1.0), ("floor", 2.0),
                                       ("pfinal_mode", "first"), ("answer_source", "gold"), ("perturb_token", -3),
                                       ("noise_std", float("nan")), ("score", "x"), ("max_batch_tokens", 0),
                                       ("answer_extractor", "no_such_module_xyz.f"), ("conclude_text", 3)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=rf"^oar\.{key}: "):
        OARSettings.from_config({key: value})


def test_defaults_per_algorithm():
    assert OARSettings.from_config(None).pfinal_mode == "answer_mean"
    assert OARSettings.from_config({"algo": "oar-p"}).pfinal_mode == "last"
    assert OARSettings.from_config({"algo": "oar-p", "pfinal_mode": "answer_joint"}).pfinal_mode == "answer_joint"


# --------------------------------------------------------------------------------------
# the worker's scoring method vs the library called directly


CASES = [
    ("oar-g", "answer_mean", "response"),
    ("oar-g", "answer_joint", "response"),
    ("oar-p", "last", "response"),
    ("oar-p", "answer_mean", "response"),
    ("oar-p", "answer_joint", "reference"),
]


@pytest.mark.parametrize("algo,mode,source", CASES)
def test_scoring_on_a_padded_batch_equals_the_library_on_unpadded_rows(algo, mode, source):
    rows = make_rows()
    settings = OARSettings.from_config({"algo": algo, "pfinal_mode": mode, "answer_source": source, "seed": 7})
    model = tiny_policy()
    scorer = LocalScorer(rank=1, model=model)
    scorer.oar_configure(settings.to_dict())
    out = scorer.oar_score(verl_batch(rows))
    assert isinstance(out, DataProto)
    got = weights_as_rows(out.batch["oar_weights"], rows)
    # padding columns of the response keep weight 1
    assert torch.all(out.batch["oar_weights"][0, len(rows[0][1]):] == 1)

    want, picked = expected_weights(model, rows, settings, reference=source == "reference",
                                    generator=torch.Generator().manual_seed(noise_seed(7, 1)))
    for b in range(len(rows)):
        torch.testing.assert_close(got[b], want[b], atol=1e-6, rtol=0, msg=f"row {b}")
    # the comparison is not vacuous: scored rows carry clearly non-uniform weights
    assert picked and all((want[b] - 1).abs().max() > 0.05 for b in picked)
    status = out.batch["oar_status"].tolist()
    assert [b for b, s in enumerate(status) if s == 0] == picked
    assert status[5] == oar_verl.STATUS.index("zero_advantage")
    if source == "response":  # row 2 has no final answer: weight 1, counted
        assert status[2] == oar_verl.STATUS.index("no_answer") and torch.all(got[2] == 1)
    else:  # with the reference answer every row with reasoning is scored, as in the TRL adapter
        assert 2 in picked
    reasoning = out.batch["oar_reasoning_len"].tolist()
    assert all((reasoning[b] > 0) == (b in picked) for b in range(len(rows)))


def test_padding_is_stripped_not_scored():
    # a scorer that kept verl's padding would score different sequences: more padding, same weights
    rows = make_rows()
    scorer = LocalScorer()
    scorer.oar_configure({"algo": "oar-p", "pfinal_mode": "last"})
    a = scorer.oar_score(verl_batch(rows, extra_prompt_pad=0, extra_response_pad=0)).batch["oar_weights"]
    b = scorer.oar_score(verl_batch(rows, extra_prompt_pad=5, extra_response_pad=4)).batch["oar_weights"]
    torch.testing.assert_close(weights_as_rows(a, rows), weights_as_rows(b, rows), atol=1e-6, rtol=0)


def test_nested_v1_layout_gives_the_same_weights():
    rows = make_rows()
    scorer = LocalScorer()
    scorer.oar_configure({"algo": "oar-p", "pfinal_mode": "answer_mean", "answer_source": "reference"})
    padded = weights_as_rows(scorer.oar_score(verl_batch(rows)).batch["oar_weights"], rows)
    out = scorer.oar_score(nested_batch(rows))
    nested = list(out["oar_weights"].unbind(0))
    assert [w.shape[0] for w in nested] == [len(r[1]) for r in rows]
    torch.testing.assert_close(nested, padded, atol=1e-6, rtol=0)


def test_unscorable_rows_keep_weight_one_and_are_counted(caplog):
    rows = make_rows()
    scorer = LocalScorer()
    # an extractor that never finds the answer: no row can be split, every weight is 1
    scorer.oar_configure({"algo": "oar-p", "answer_extractor": "verl_fixtures:no_answer"})
    with caplog.at_level("WARNING", logger=oar_verl.__name__):
        out = scorer.oar_score(verl_batch(rows))
    assert torch.all(out.batch["oar_weights"] == 1)
    metrics = oar_verl.oar_metrics(out.batch["oar_status"], out.batch["oar_reasoning_len"],
                                   weights_as_rows(out.batch["oar_weights"], rows))
    assert metrics["oar/scored_frac"] == 0.0
    assert metrics["oar/unscored/no_answer"] == len(rows) - 1 and metrics["oar/unscored/zero_advantage"] == 1
    assert f"{len(rows) - 1} of {len(rows)} responses have no final answer" in caplog.text


def test_metrics_of_a_scored_batch():
    rows = make_rows()
    scorer = LocalScorer()
    scorer.oar_configure({"algo": "oar-p", "pfinal_mode": "last"})
    out = scorer.oar_score(verl_batch(rows))
    w = weights_as_rows(out.batch["oar_weights"], rows)
    m = oar_verl.oar_metrics(out.batch["oar_status"], out.batch["oar_reasoning_len"], w, seconds=0.5)
    R = out.batch["oar_reasoning_len"]
    flat = torch.cat([w[b][: int(R[b])] for b in range(len(rows)) if R[b] > 0]).double()
    assert m["oar/scored_frac"] == pytest.approx(float((R > 0).sum()) / len(rows))
    assert m["oar/weight_mean"] == pytest.approx(float(flat.mean()))
    assert m["oar/weight_min"] == pytest.approx(float(flat.min())) and m["oar/weight_max"] == pytest.approx(float(flat.max()))
    assert m["oar/suppressed_frac"] == pytest.approx(float((flat < 1).double().mean()))
    assert m["oar/time"] == 0.5


# --------------------------------------------------------------------------------------
# verl's own loss with the reshaped advantages


def test_verl_ppo_loss_moves_by_the_hand_computed_amount():
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import FSDPActorConfig
    from verl.workers.utils.losses import ppo_loss

    P, R = [3, 2, 4], [5, 4, 3]
    A = [1.0, -0.5, 2.0]
    # a known non-uniform weight per token (what the workers return), 1 past each reasoning prefix
    w_rows = [torch.tensor([0.1, 2.0, 1.3, 1.0, 1.0]), torch.tensor([1.5, 0.2, 1.0, 1.0]), torch.tensor([1.7, 1.0, 1.0])]
    N = sum(R)
    nj = lambda xs: torch.nested.as_nested_tensor(xs, layout=torch.jagged)  # noqa: E731
    cfg = FSDPActorConfig(strategy="fsdp2", ppo_mini_batch_size=3, ppo_micro_batch_size_per_gpu=3,
                          use_dynamic_bsz=False, rollout_n=3)
    grpo_adv = nj([torch.full((r,), a) for r, a in zip(R, A)])
    oar_adv = apply_oar_weights(grpo_adv, w_rows)

    def loss_and_grad(adv):
        values = torch.zeros(sum(P) + N, requires_grad=True)  # log-probs equal to the old ones: ratio 1
        offsets = torch.tensor([0] + [sum(P[: i + 1]) + sum(R[: i + 1]) for i in range(3)])
        data = TensorDict({"prompts": nj([torch.arange(p) for p in P]), "responses": nj([torch.arange(r) for r in R]),
                           "response_mask": nj([torch.ones(r, dtype=torch.long) for r in R]),
                           "old_log_probs": nj([torch.zeros(r) for r in R]), "advantages": adv}, batch_size=[3])
        tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=N, global_batch_size=3)
        loss, _ = ppo_loss(cfg, {"log_probs": torch.nested.nested_tensor_from_jagged(values, offsets)}, data)
        loss.backward()
        return loss.detach(), values.grad

    loss_grpo, grad_grpo = loss_and_grad(grpo_adv)
    loss_oar, grad_oar = loss_and_grad(oar_adv)
    # token-mean over the batch at ratio 1: loss = -sum_t w_t A_i / N, d loss / d logp_t = -w_t A_i / N
    hand = -sum(float((w * a).sum()) for w, a in zip(w_rows, A)) / N
    assert loss_oar.item() == pytest.approx(hand, abs=1e-6)
    assert loss_grpo.item() == pytest.approx(-sum(a * r for a, r in zip(A, R)) / N, abs=1e-6)
    assert abs(loss_oar.item() - loss_grpo.item()) > 0.05  # the weights moved it
    # the log-prob of response token t sits one position left of it (verl's shift)
    pos, start = [], 0
    for p, r in zip(P, R):
        pos += list(range(start + p - 1, start + p + r - 1))
        start += p + r
    want = torch.cat([-w * a / N for w, a in zip(w_rows, A)])
    torch.testing.assert_close(grad_oar[pos], want, atol=1e-7, rtol=0)
    torch.testing.assert_close(grad_grpo[pos], torch.cat([torch.full((r,), -a / N) for r, a in zip(R, A)]),
                               atol=1e-7, rtol=0)


def test_apply_weights_checks_lengths():
    adv = torch.ones(2, 3)
    with pytest.raises(ValueError, match="weights: expected 2 rows"):
        apply_oar_weights(adv, [torch.ones(3)])
    with pytest.raises(ValueError, match=r"weights\[1\]: 4 weights for a response of 3 tokens"):
        apply_oar_weights(adv, [torch.ones(3), torch.tensor([1.0, 1.0, 1.0, 2.0])])
    out = apply_oar_weights(adv, [torch.tensor([2.0]), torch.ones(3)])
    assert out.tolist() == [[2.0, 1.0, 1.0], [1.0, 1.0, 1.0]]


# --------------------------------------------------------------------------------------
# Ray: two CPU workers, verl's dispatch


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    paths = [str(HERE), str(HERE.parent), str(ROOT), os.environ.get("PYTHONPATH", "")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in paths if p),
                                       "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_two_cpu_workers_match_in_process(ray_cluster):
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup

    rows = make_rows()
    batch = verl_batch(rows)
    settings = {"algo": "oar-p", "pfinal_mode": "answer_mean"}
    pool = RayResourcePool([2], use_gpu=False, max_colocate_count=1)  # one CPU per worker
    group = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=RayClassWithInitArgs(cls=ray_cluster.remote(TinyOARWorker)))
    assert group.world_size == 2
    group.oar_configure(settings)
    out = group.oar_score(batch)
    assert isinstance(out, DataProto) and len(out) == len(rows)
    remote_adv = apply_oar_weights(batch.batch["advantages"], out.batch["oar_weights"])

    local = LocalScorer()
    local.oar_configure(settings)
    parts = [local.oar_score(chunk) for chunk in batch.chunk(2)]  # the shares verl's dispatch hands out
    local_w = torch.cat([p.batch["oar_weights"] for p in parts])
    local_adv = apply_oar_weights(batch.batch["advantages"], local_w)
    torch.testing.assert_close(remote_adv, local_adv, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.batch["oar_status"], torch.cat([p.batch["oar_status"] for p in parts]))
    assert not torch.equal(remote_adv, batch.batch["advantages"])  # OAR changed them
    # and scoring the whole batch at once gives the same advantages up to float32 batching round-off
    # (other padding in OAR-P's batched forwards; measured 5e-4 at most)
    whole = apply_oar_weights(batch.batch["advantages"], local.oar_score(batch).batch["oar_weights"])
    torch.testing.assert_close(remote_adv, whole, atol=2e-3, rtol=0)


# --------------------------------------------------------------------------------------
# the trainer subclass


def _verl_config(**overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import verl.trainer

    config_dir = str(Path(verl.trainer.__file__).parent / "config")
    args = [f"{k}={v}" for k, v in overrides.items()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=args)


BASE = {"trainer.v1.trainer_mode": "oar", "actor_rollout_ref.actor.strategy": "fsdp2",
        "algorithm.adv_estimator": "grpo", "+oar.algo": "oar-p", "+oar.tau": 0.3}


def test_get_trainer_cls_returns_the_subclass_and_it_is_sync():
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    config = _verl_config(**BASE)
    cls = get_trainer_cls(config.trainer.v1.trainer_mode)
    assert cls is oar_verl.OARTrainer and issubclass(cls, PPOTrainerSync)
    trainer = cls(config)
    assert trainer.oar_settings.algo == "oar-p" and trainer.oar_settings.tau == 0.3
    # verl compares trainer_mode with "sync" (replay buffer, refill, checkpoints, submission):
    assert trainer.trainer_mode == "sync" and "trainer_mode" not in vars(trainer)
    assert trainer.configured_trainer_mode == "oar"
    assert type(trainer.replay_buffer) is ReplayBuffer and not isinstance(trainer.replay_buffer, ReplayBufferAsync)
    assert trainer.replay_buffer.trainer_mode == "sync"
    assert trainer.parameter_sync_step == config.trainer.v1.sync.get("parameter_sync_step", 1)
    # the actor role runs the OAR worker
    trainer._init_resource_pool_mgr()
    actor = [cls for role, cls in trainer.role_worker_mapping.items() if "actor" in str(role).lower()]
    assert actor and all(getattr(c, "__ray_actor_class__", None) is oar_verl.OARActorRolloutRefWorker for c in actor)


def test_trainer_fails_at_start_on_an_unknown_key():
    config = _verl_config(**BASE, **{"+oar.pfinal": "last"})
    with pytest.raises(ValueError, match=r"^oar\.pfinal: unknown OAR key.*allowed keys: algo, tau"):
        oar_verl.OARTrainer(config)


@pytest.mark.parametrize("key,value,match", [("actor_rollout_ref.actor.strategy", "fsdp", "strategy"),
                                             ("algorithm.adv_estimator", "gae", "adv_estimator")])
def test_trainer_refuses_what_it_cannot_reshape(key, value, match):
    config = _verl_config(**{**BASE, key: value})
    with pytest.raises(ValueError, match=match):
        oar_verl.OARTrainer(config)


# --------------------------------------------------------------------------------------
# the example's configuration (python/verl_oar_grpo.yaml through python/verl_oar_grpo.py --check)


def test_example_config_composes_and_selects_the_oar_trainer():
    out = subprocess.run([sys.executable, str(ROOT / "python" / "verl_oar_grpo.py"), "--check", "--algo", "oar-p"],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "-> oar_kernels.integrations.verl.OARTrainer" in out.stdout and "'algo': 'oar-p'" in out.stdout
    assert out.stdout.rstrip().endswith("done")


def test_example_rejects_an_unknown_key_in_one_line():
    out = subprocess.run([sys.executable, str(ROOT / "python" / "verl_oar_grpo.py"), "--check", "+oar.taus=0.3"],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("verl_oar_grpo.py: error: oar.taus: unknown OAR key; allowed keys: algo, tau"), out.stderr


# --------------------------------------------------------------------------------------
# the driver step, with TransferQueue and the worker group stood in by in-process fakes


def test_compute_advantage_multiplies_the_workers_weights_into_the_stored_advantages(monkeypatch):
    import transfer_queue as tq
    from tensordict import TensorDict
    from tensordict.tensorclass import NonTensorStack
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    rows = make_rows()
    keys = [f"uid{b}_0_0" for b in range(len(rows))]
    start = nested_batch(rows)
    store = {k: {name: start[name][b] if name != "reward_model" else start[name][b]
                 for name in ("prompts", "responses", "advantages", "reward_model")} for b, k in enumerate(keys)}
    grpo = {k: store[k]["advantages"].clone() for k in keys}

    def kv_batch_get(keys, partition_id, select_fields):
        out = {}
        for f in select_fields:
            vals = [store[k][f] for k in keys]
            if isinstance(vals[0], torch.Tensor) and vals[0].dim() == 1:
                out[f] = torch.nested.as_nested_tensor(vals, layout=torch.jagged)
            elif isinstance(vals[0], torch.Tensor):
                out[f] = torch.stack(vals)
            else:
                out[f] = NonTensorStack(*vals)
        return TensorDict(out, batch_size=[len(keys)])

    def kv_batch_put(keys, partition_id, fields):
        for name, value in fields.items():
            for k, v in zip(keys, value.unbind(0)):
                store[k][name] = v

    monkeypatch.setattr(tq, "kv_batch_get", kv_batch_get)
    monkeypatch.setattr(tq, "kv_batch_put", kv_batch_put)
    monkeypatch.setattr(PPOTrainer, "_compute_advantage", lambda self, batch, metrics: batch)  # GRPO's step: done

    scorer = LocalScorer()
    requests = []

    class Group:  # what verl's dispatch does with a KVBatchMeta: fetch the fields, call, put the output
        def oar_score(self, meta):
            requests.append(meta)
            out = scorer.oar_score(kv_batch_get(meta.keys, meta.partition_id, meta.fields))
            kv_batch_put(meta.keys, meta.partition_id, out)
            return meta

    trainer = object.__new__(oar_verl.OARTrainer)
    trainer.oar_settings = OARSettings.from_config({"algo": "oar-p", "answer_source": "reference"})
    scorer.oar_configure(trainer.oar_settings.to_dict())
    trainer.actor_rollout_wg = Group()
    metrics = {}
    meta = KVBatchMeta(keys=keys, tags=[{}] * len(keys), partition_id="train", fields=None, extra_info={"x": 1})
    assert trainer._compute_advantage(meta, metrics) is meta
    assert requests[0].fields == ["prompts", "responses", "advantages", "reward_model"]

    want = scorer.oar_score(verl_batch(rows)).batch["oar_weights"]
    for b, k in enumerate(keys):
        torch.testing.assert_close(store[k]["advantages"], grpo[k] * want[b, : len(rows[b][1])], atol=1e-6, rtol=0)
    assert any(not torch.equal(store[k]["advantages"], grpo[k]) for k in keys)
    assert metrics["oar/scored_frac"] == pytest.approx((len(rows) - 1) / len(rows))  # row 5: zero advantage
    assert metrics["oar/unscored/zero_advantage"] == 1 and "oar/weight_mean" in metrics and "oar/time" in metrics


# --------------------------------------------------------------------------------------
# FSDP2 (CPU, gloo): scoring inside full_parameters on a sharded model


def test_fsdp2_full_parameters_scoring_equals_the_unsharded_model(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(HERE / "fsdp2_scoring.py")], cwd=str(tmp_path), env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "ok rank 0" in out.stdout and "ok rank 1" in out.stdout, out.stdout


# --------------------------------------------------------------------------------------
# the library's row rule the plugin (and the TRL adapter) call


def test_build_scored_segments_reasons():
    from oar_kernels.segments import build_scored_segments
    from tiny_models import make_tokenizer

    tok = make_tokenizer()
    enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    prompt = enc("Tom has 3 apples.")
    responses = [enc("We add 3 + 4 = 7.\nThe answer is 7."),   # scored
                 enc("We add 3 + 4 = 7.\nThe answer is 7."),   # zero advantage
                 [],                                           # empty
                 enc("We add 3 and 4 and stop."),              # no answer
                 enc("The answer is 7."),                      # no reasoning before the answer
                 enc("We add " + "1 + " * 40 + "1.\nThe answer is 41.")]  # too long for max_length
    rows, segs, skipped = build_scored_segments([prompt] * 6, responses, tok, advantages=[1, 0, 1, 1, 1, 1],
                                                max_length=60)
    assert rows == [0] and segs[0].answer_text == "7" and segs[0].num_reasoning > 0
    assert skipped == {"zero_advantage": [1], "empty": [2], "no_answer": [3], "no_reasoning": [4], "too_long": [5]}
    # with reference answers the response without one is scored too (its whole response is reasoning)
    rows, _, skipped = build_scored_segments([prompt] * 6, responses, tok, references=["7"] * 6,
                                             advantages=[1, 0, 1, 1, 1, 1], max_length=60)
    assert rows == [0, 3] and skipped["no_answer"] == []
    with pytest.raises(ValueError, match="references: expected 6 values"):
        build_scored_segments([prompt] * 6, responses, tok, references=["7"])


# --------------------------------------------------------------------------------------
# the actor worker's hooks on a stand-in engine (verl's FSDP engine needs CUDA)


def test_actor_worker_scores_through_its_engine():
    import contextlib
    from types import SimpleNamespace

    from verl.utils import ulysses
    from tiny_models import make_tokenizer

    model = tiny_policy()
    seen = {}

    class Engine:  # what OARActorRolloutRefWorker uses of verl's FSDPEngine
        module = model
        ulysses_device_mesh = None

        @contextlib.contextmanager
        def eval_mode(self):
            seen["eval_mode"] = True
            model.eval()
            yield

    class Spy(torch.nn.Module):  # records the sequence-parallel group the scoring forwards see
        def forward(self, x):
            seen.setdefault("sp_groups", set()).add(ulysses.get_ulysses_sequence_parallel_group())
            return x

    handle = model.model.layers[0].register_forward_pre_hook(lambda m, a: Spy()(a))
    worker = object.__new__(oar_verl.OARActorRolloutRefWorker)
    worker._rank = 0
    worker.role = "actor_rollout"
    worker.actor = SimpleNamespace(engine=Engine(), model_config=SimpleNamespace(tokenizer=make_tokenizer()))
    sentinel = object()
    ulysses.set_ulysses_sequence_parallel_group(sentinel)
    try:
        worker.oar_configure({"algo": "oar-g", "pfinal_mode": "answer_mean", "seed": 5})
        rows = make_rows()
        out = worker.oar_score(verl_batch(rows))
        assert ulysses.get_ulysses_sequence_parallel_group() is sentinel  # restored
    finally:
        ulysses.set_ulysses_sequence_parallel_group(None)
        handle.remove()
    assert seen["eval_mode"] and seen["sp_groups"] == {None}  # whole rows, no sequence sharding inside
    local = LocalScorer(model=model)
    local.oar_configure({"algo": "oar-g", "pfinal_mode": "answer_mean", "seed": 5})
    torch.testing.assert_close(out.batch["oar_weights"], local.oar_score(verl_batch(rows)).batch["oar_weights"],
                               atol=1e-6, rtol=0)
    worker.actor = None
    with pytest.raises(RuntimeError, match="has no actor model"):
        worker.oar_score(verl_batch(rows))
