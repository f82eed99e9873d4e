"""Package attributes imported on first use (so `import oar_kernels.x` stays light)."""
from importlib import import_module
from typing import Callable, Dict


def lazy_getattr(package: str, exports: Dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: exports[name] is the relative module holding `name`;
    the first access imports it and caches the value in `namespace` (the package's globals)."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(import_module(exports[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
