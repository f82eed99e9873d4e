"""oar_kernels/kernels/_interpreter.py: Triton < 3.7's interpreter with numpy >= 2.4.

The kernel tests themselves fail under that pairing without the fix (Triton 3.6.0 with numpy
2.4.6: 48 of them, every `range` over a runtime bound); here the fix's own logic is checked on
any installed versions, against a stand-in for the interpreter's tensor patching."""
import types

import numpy as np
import pytest

pytest.importorskip("triton")

from oar_kernels.kernels import _interpreter  # noqa: E402


class _Scope:
    def set_attr(self, obj, name, value):
        setattr(obj, name, value)


def _old_patch(tensor, scope):  # what Triton 3.6 installs: int() of a one-element array
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))


def test_version_parse():
    assert _interpreter._version("3.6.0") == (3, 6, 0)
    assert _interpreter._version("2.4.6") == (2, 4, 6)
    assert _interpreter._version("3.7.0+git1234") == (3, 7, 0)
    assert _interpreter._version("2.5.0rc1") == (2, 5, 0)


@pytest.mark.parametrize("triton_version,numpy_version,applied", [
    ("3.6.0", "2.4.6", True), ("3.7.0", "2.4.6", False), ("3.6.0", "2.3.5", False)])
def test_patch_only_where_needed(monkeypatch, triton_version, numpy_version, applied):
    import triton
    from triton.runtime import interpreter

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(np, "__version__", numpy_version)
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", _old_patch, raising=False)
    assert _interpreter.patch_scalar_index() is applied
    T = type("T", (), {})
    interpreter._patch_lang_tensor(T, _Scope())
    t = T()
    t.handle = types.SimpleNamespace(data=np.array([7], dtype=np.int32))  # a scalar, as the interpreter holds it
    if applied:
        assert range(0, 20)[t] == 7 and list(range(t)) == list(range(7))
        assert _interpreter.patch_scalar_index() is False  # once only
    else:
        assert interpreter._patch_lang_tensor is _old_patch


def test_no_patch_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert _interpreter.patch_scalar_index() is False
