"""A key/value cache that keeps a prefix and a scratch tail, for prefix-reusing OAR-P.

The unperturbed batch fills each layer once ([g, H_kv, L, d]); every later forward writes its
keys/values into the scratch tail right after the prefix and attends to the view
``buffer[:, :, :L + q]``. The prefix is therefore computed once and only read afterwards:
no `torch.cat` of the whole cache per chunk and no cropping (the next chunk overwrites the
tail). Which prefix keys a query may see is decided by the explicit 4-D attention mask.

Built on transformers' layered Cache API (>= 4.56), whose abstract layer methods changed names and
arguments across releases (each variant is implemented below); `available()` says whether it exists.
"""
from __future__ import annotations

import functools
import inspect

import torch

try:  # transformers >= 4.56: Cache is a list of CacheLayerMixin
    from transformers.cache_utils import Cache, CacheLayerMixin

    _OK = True
except Exception:  # pragma: no cover - older transformers
    Cache = CacheLayerMixin = object
    _OK = False


def available() -> bool:
    return _OK


class PrefixScratchLayer(CacheLayerMixin):
    """One layer: keys/values [g, H_kv, prefix + extra, d]; the first update sets the prefix."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, extra: int):
        super().__init__()
        self.extra = int(extra)
        self.prefix = 0
        self.is_initialized = False  # the base class sets it only from transformers 4.57 on

    def lazy_initialization(self, key_states, value_states=None):
        # transformers < 5 declares it with key_states only (for early allocation, which this
        # layer does not support: its first update() is the prefix); our update() passes both
        if value_states is None:
            raise NotImplementedError("PrefixScratchLayer is filled by its first update(), not allocated early")
        g, h, n, _ = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states.new_empty((g, h, n + self.extra, key_states.shape[-1]))
        self.values = value_states.new_empty((g, value_states.shape[1], n + self.extra, value_states.shape[-1]))
        self.keys[:, :, :n].copy_(key_states)
        self.values[:, :, :n].copy_(value_states)
        self.prefix = n
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:  # the prefix pass: keep its states, attend to them as given
            self.lazy_initialization(key_states, value_states)
            return key_states, value_states
        n, q = self.prefix, key_states.shape[-2]
        if q > self.extra:
            raise RuntimeError(f"scratch of {self.extra} tokens cannot hold a chunk of {q}")
        self.keys[:, :, n : n + q].copy_(key_states)
        self.values[:, :, n : n + q].copy_(value_states)
        return self.keys[:, :, : n + q], self.values[:, :, : n + q]

    def get_mask_sizes(self, query) -> tuple:
        # transformers >= 5.5 passes the query length, earlier releases the cache positions
        q = query.shape[-1] if isinstance(query, torch.Tensor) else int(query)
        return self.prefix + q, 0

    def get_seq_length(self) -> int:
        return self.prefix

    def get_max_length(self) -> int:  # the abstract method's name from transformers 5.17 on
        return -1

    def get_max_cache_shape(self) -> int:  # its name before
        return -1


def first_rows(cache, n: int):
    """A cache over batch rows [0, n) of `cache`: views of the same buffers (nothing copied; the
    new scratch tail is the old one's). OAR-P narrows its batch this way as rows run out of
    perturbations."""
    layers = []
    for layer in cache.layers:
        new = PrefixScratchLayer(layer.extra)
        new.dtype, new.device, new.prefix = layer.dtype, layer.device, layer.prefix
        new.keys, new.values = layer.keys[:n], layer.values[:n]
        new.is_initialized = True
        layers.append(new)
    return Cache(layers=layers)


def prefix_cache(extra: int):
    """A Cache whose layers (made lazily, one per decoder layer) keep the first forward as
    prefix and have `extra` scratch slots after it."""
    return Cache(layer_class_to_replicate=functools.partial(PrefixScratchLayer, extra))


@functools.lru_cache(maxsize=None)
def _cache_argument(forward) -> str:
    params = inspect.signature(forward).parameters
    # transformers renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40);
    # models not yet migrated, and older releases, take the old name.
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(module, cache) -> dict:
    """The keyword that hands `cache` to `module`'s forward, under the name it takes."""
    return {_cache_argument(type(module).forward): cache}
