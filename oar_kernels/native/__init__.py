"""Plain-C CPU kernels, built with the system's C compiler on first use (see _build.py).

Each op keeps a torch path; these only replace it on CPU where a compiler is present.
"""
from ._build import ENV_SWITCH, enabled, load

__all__ = ["ENV_SWITCH", "enabled", "load"]
