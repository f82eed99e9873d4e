"""Adapters that put OAR into other trainers.

Each adapter lives in its own module and imports its trainer library only when that module
is imported, so ``import oar_kernels`` (and ``import oar_kernels.integrations``) never needs
them:

    from oar_kernels.integrations.trl import OARConfig, OARGRPOTrainer   # needs `trl`

The names are also reachable lazily from this package (``oar_kernels.integrations.OARGRPOTrainer``).
"""
from .._lazy import lazy_getattr

_EXPORTS = {
    "OARConfig": ".trl",
    "OARGRPOTrainer": ".trl",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__():
    return __all__
