"""The op micro-benchmarks as pytest-benchmark tests, one group per op with its baselines in the
same group (shapes and baselines: baselines.py; how to run, save and compare: docs/benchmarks.md).

    pytest benchmarks/ --benchmark-only                          # a few minutes on 2 CPU cores
    pytest benchmarks/ --benchmark-only --benchmark-compare      # against the newest saved run

A baseline whose package is absent (liger-kernel, trl, cut-cross-entropy) is skipped with the
reason. The shapes are small (CPU_* in baselines.py): these runs catch regressions and compare
variants within one run; the figures the README states come from gpu_check.py and the scripts.
"""
import baselines as bl
import numpy as np
import pytest
import torch

import oar_kernels as oar


def _variant(fns, missing, name):
    if name in missing:
        pytest.skip(f"{name}: {missing[name]}")
    return fns[name]


@pytest.mark.benchmark(group="fused_linear_logprob")
@pytest.mark.parametrize("name", bl.LOGPROB)
def test_fused_linear_logprob(bench, device, name):
    """fwd+bwd of per-token log-probs from the LM head, fp32, against TRL's, liger's and Cut
    Cross-Entropy's functions, eager and torch.compile'd eager."""
    x = bl.lm_inputs(bl.CPU_LM, device)
    bench(_variant(*bl.make_logprob(x.h, x.w, x.t, x.g, names=(name,)), name))


@pytest.mark.benchmark(group="fused_linear_grpo_loss")
@pytest.mark.parametrize("name", bl.GRPO)
def test_fused_linear_grpo_loss(bench, device, name):
    """fwd+bwd of the GRPO loss from the LM head against liger's fused GRPO loss (compiled, as
    its users run it), TRL's log-probs + grpo_loss, eager and torch.compile'd eager."""
    x = bl.lm_inputs(bl.CPU_GRPO, device)
    bench(_variant(*bl.make_grpo(x.h3, x.w, x.t2, x.old, x.adv, x.mask, names=(name,)), name))


@pytest.mark.benchmark(group="bilevel_reshape")
@pytest.mark.parametrize("name", ["default", "torch", "numpy loop"])
def test_bilevel_reshape(bench, device, name):
    """The op's default path (the C kernel on CPU where it built, Triton on CUDA), its torch
    path, and the per-row numpy loop."""
    scores, mask = bl.bilevel_inputs(*bl.CPU_BILEVEL, device=device)
    if name == "numpy loop":
        s, m = scores.cpu().numpy(), mask.cpu().numpy()
        bench(lambda: bl.numpy_loop(s, m, **bl.BILEVEL), rounds=10)
        return
    kw = dict(bl.BILEVEL, **({"backend": "torch"} if name == "torch" else {}))
    out = oar.bilevel_reshape(scores, mask, **kw)
    np.testing.assert_allclose(out.cpu().numpy(), bl.numpy_loop(scores.cpu().numpy(), mask.cpu().numpy(), **bl.BILEVEL),
                               atol=1e-4)
    bench(lambda: oar.bilevel_reshape(scores, mask, **kw), rounds=20)


@pytest.mark.benchmark(group="saliency_probe")
@pytest.mark.parametrize("probe", [False, True], ids=["backward", "backward with probe"])
def test_saliency_probe(bench, device, probe):
    """One backward through an MLP block to its input, with and without oar.SaliencyProbe."""
    setup, run, sp = bl.saliency_backward(*bl.CPU_SALIENCY, device=device, hidden_mult=2, probe=probe)
    bench(run, setup=setup, rounds=10)
    assert (sp.grad_x_input is not None) == probe


@pytest.fixture(scope="module")
def model_and_segments():
    model = bl.build_model(**bl.CPU_MODEL)
    return model, bl.make_segments(**bl.CPU_SEGMENTS, vocab=bl.CPU_MODEL["vocab"])


@pytest.mark.benchmark(group="perturbation_importance (OAR-P)")
@pytest.mark.parametrize("name", ["prefix reuse", "batched naive (prefix_reuse=False)", "naive oracle"])
def test_oarp(bench, device, model_and_segments, name):
    """OAR-P with prefix reuse against the batched naive path (every perturbed sequence a
    full-length forward) and the naive oracle (one forward per reasoning token), mode last."""
    model, segs = model_and_segments
    fn = bl.oarp_fns(model.to(device), segs, "last")[name]
    with torch.no_grad():
        bench(fn, rounds=3)


@pytest.mark.benchmark(group="OAR-G step")
@pytest.mark.parametrize("name", [bl.GRPO_STEP, "OAR-G step (answer_mean)", bl.THREE_PASS])
def test_oarg_step(bench, device, model_and_segments, name):
    """The one-forward OAR-G training step (OARGStep, answer_mean) against a plain GRPO step on
    the same responses, and against the authors' three passes (naive OAR-G, then the step)."""
    model, segs = model_and_segments
    model.to(device).train()
    try:
        bench(bl.step_fns(model, segs, device, three_pass=name == bl.THREE_PASS)[name], rounds=3)
    finally:
        model.eval()
