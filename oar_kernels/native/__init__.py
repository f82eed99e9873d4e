"""Plain-C CPU kernels (sources in csrc/), built when the package is installed (see _lib.py).

Each op keeps a torch path; these only replace it on CPU where the install built them.
"""
from ._lib import ENV_SWITCH, enabled, library_path, load

__all__ = ["ENV_SWITCH", "enabled", "library_path", "load"]
