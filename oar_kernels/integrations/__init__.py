"""Adapters that put OAR into other trainers.

Each adapter lives in its own module and imports its trainer library only when that module
is imported, so ``import oar_kernels`` (and ``import oar_kernels.integrations``) never needs
them:

    from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer   # needs `trl`

The names are also reachable lazily from this package (``oar_kernels.integrations.OARGRPOTrainer``).
"""
from importlib import import_module

_EXPORTS = {
    "OARConfig": ".trl",
    "OARGRPOTrainer": ".trl",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oar_kernels.integrations' has no attribute {name!r}")


def __dir__():
    return __all__
