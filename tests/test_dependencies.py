"""What the install promises: every CPU path works without Triton (it has no wheels for macOS or
Windows), and a missing or unsupported dependency gives one message that says what to install."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oar_kernels import _deps

ROOT = Path(__file__).resolve().parents[1]

# Every meta-path finder wrapped so that it finds no `triton`, as on a machine without it: `import
# triton` raises ModuleNotFoundError and importlib.util.find_spec("triton") returns None.
HIDE_TRITON = textwrap.dedent("""
    import importlib.abc, sys
    class _WithoutTriton(importlib.abc.MetaPathFinder):
        def __init__(self, inner):
            self.inner = inner
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "triton" or not hasattr(self.inner, "find_spec"):
                return None
            return self.inner.find_spec(name, path, target)
        def find_distributions(self, *args, **kwargs):  # importlib.metadata asks this
            found = getattr(self.inner, "find_distributions", lambda *a, **k: [])(*args, **kwargs)
            return [d for d in found if (d.metadata["Name"] or "").lower() != "triton"]
        def invalidate_caches(self):
            getattr(self.inner, "invalidate_caches", lambda: None)()
    sys.meta_path[:] = [_WithoutTriton(f) for f in sys.meta_path]
""")

CPU_PATHS_WITHOUT_TRITON = HIDE_TRITON + textwrap.dedent("""
    import warnings
    import torch
    import oar_kernels as oar
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # fused LM-head ops, with gradients
    h = torch.randn(6, 8, requires_grad=True); w = torch.randn(11, 8, requires_grad=True)
    t = torch.randint(0, 11, (6,))
    lp = oar.fused_linear_logprob(h, w, t)
    lp.sum().backward()
    assert h.grad is not None and torch.isfinite(lp).all()
    B, T = 2, 3
    mask = torch.ones(B, T, dtype=torch.bool)
    adv = oar.group_advantages(torch.tensor([1.0, 0.0]), group_size=2)
    loss, _ = oar.fused_linear_grpo_loss(torch.randn(B, T, 8, requires_grad=True), w, torch.randint(0, 11, (B, T)),
                                         None, adv, mask)
    loss.backward()
    loss, _ = oar.grpo_loss(torch.randn(B, T, requires_grad=True), None, adv, mask)
    loss.backward()
    # Bi-Level (C kernel or torch), saliency probe
    scores = torch.rand(B, 5); sm = torch.ones(B, 5, dtype=torch.bool)
    assert torch.allclose(oar.bilevel_reshape(scores, sm), oar.bilevel_reshape(scores, sm, backend="torch"), atol=1e-5)
    x = torch.randn(B, 4, 8, requires_grad=True)
    gxi, gn = torch.zeros(B, 4), torch.zeros(B, 4)
    (oar.saliency_probe(x, gxi, gn) ** 2).sum().backward()
    assert (gn > 0).all()
    # OAR-G and OAR-P on a tiny model
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=1)
    model = LlamaForCausalLM(cfg).eval()
    ids = lambda *v: torch.tensor(v)
    seg = oar.Segments(ids(2, 3, 4), ids(5, 6, 7, 8), ids(9), ids(10, 11))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning from our own calls into transformers
        g, gm = oar.gradient_importance(model, [seg, seg])
        p, pm = oar.perturbation_importance(model, [seg, seg])
    assert g.shape == p.shape == (2, 4) and gm.all() and pm.all()
    try:
        oar.bilevel_reshape(scores, sm, backend="triton")
    except ValueError as e:
        assert "pip install triton" in str(e), e
    else:
        raise SystemExit("backend='triton' without triton did not raise")
    assert "triton" not in sys.modules
    print("ok")
""")


def _run(code: str, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=300)


def test_every_cpu_path_works_without_triton():
    res = _run(CPU_PATHS_WITHOUT_TRITON)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_cuda_tensors_without_triton_warn_once_and_take_the_torch_path():
    code = HIDE_TRITON + textwrap.dedent("""
        import warnings
        from oar_kernels.ops._dispatch import resolve_backend
        class FakeCuda:  # resolve_backend only asks is_cuda
            is_cuda = True
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            picks = [resolve_backend("auto", FakeCuda()) for _ in range(3)]
        assert picks == ["torch"] * 3, picks
        msgs = [str(w.message) for w in caught]
        assert len(msgs) == 1 and "pip install triton" in msgs[0], msgs
        print("ok")
    """)
    res = _run(code)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


@pytest.mark.parametrize("version", ["4.55.4", "6.0.0", "3.2"])
def test_unsupported_transformers_is_one_clear_error(monkeypatch, version):
    monkeypatch.setattr(_deps.metadata, "version", lambda name: version)
    _deps.require_transformers.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"found transformers .*pip install 'transformers>=4\.56,<6'"):
            _deps.require_transformers()
    finally:
        _deps.require_transformers.cache_clear()


@pytest.mark.parametrize("version", ["4.56.0", "5.17.0", "5.24.0.dev0"])
def test_supported_transformers_passes(monkeypatch, version):
    monkeypatch.setattr(_deps.metadata, "version", lambda name: version)
    _deps.require_transformers.cache_clear()
    try:
        assert _deps.require_transformers() == version
    finally:
        _deps.require_transformers.cache_clear()


def test_missing_transformers_says_what_to_install():
    code = textwrap.dedent("""
        import importlib.metadata as md
        real = md.version
        def fake(name):
            if name == "transformers":
                raise md.PackageNotFoundError(name)
            return real(name)
        md.version = fake
        try:
            import oar_kernels.importance
        except ImportError as e:
            print(e)
    """)
    res = _run(code)
    assert "pip install 'transformers>=4.56,<6'" in res.stdout, res.stdout + res.stderr[-2000:]


def test_bounds_match_setup_py():
    """The runtime check and the install metadata name the same range."""
    setup = (ROOT / "setup.py").read_text()
    assert f'"{_deps.TRANSFORMERS_SPEC}"' in setup
