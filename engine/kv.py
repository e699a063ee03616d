"""The running batch's KV cache: one rectangular DynamicCache plus a validity mask.

Sequences of different lengths share one (batch, heads, columns, dim) tensor per layer. A column that
holds no token of a row — left padding after a join, or a speculative token the target rejected — is
marked invalid and masked out of attention forever, so rows can join, leave and roll back drafts
without copying anyone's cache. `compact()` squeezes the holes out when they grow.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Protocol, TypeGuard

import torch
from transformers import DynamicCache, PretrainedConfig

from engine.prefix_cache import Layers

_CACHE_ARGUMENT = "cache" if tuple(map(int, version("transformers").split(".")[:2])) >= (5, 24) else "past_key_values"


def cache_argument(cache: DynamicCache | None) -> dict[str, DynamicCache | None]:
    """The KV cache as forward()'s keyword: transformers 5.24 renamed past_key_values to cache (warning on
    the old name every run), and 5.40 drops the old name."""
    return {_CACHE_ARGUMENT: cache}


class KVLayer(Protocol):
    """A cache layer holding tokens: transformers types a layer's keys and values as optional (None, or
    empty, until its first update), so the layers are narrowed to this once, in `_layers`."""

    keys: torch.Tensor
    values: torch.Tensor


def _layers(cache: DynamicCache) -> list[KVLayer]:
    return [layer for layer in cache.layers if _holds_tokens(layer)]


def _holds_tokens(layer: object) -> TypeGuard[KVLayer]:
    if not hasattr(layer, "keys"):  # a linear-attention layer keeps recurrent state, not keys and values
        raise TypeError(f"{type(layer).__name__}: the engine caches attention keys and values only")
    return layer.keys is not None and bool(layer.keys.numel())


def cache_layers(cache: DynamicCache) -> Layers:
    """A batch-1 cache's (keys, values) per layer, for the prefix cache (no copy)."""
    return [(layer.keys, layer.values) for layer in _layers(cache)]


def cache_from_layers(config: PretrainedConfig, layers: Layers) -> DynamicCache:
    """A fresh cache holding a copy of `layers` (a stored prefix), ready to be extended."""
    cache = DynamicCache(config=config)
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


class BatchKV:
    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.valid = torch.zeros((0, 0), dtype=torch.bool)

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def columns(self) -> int:
        return self.valid.shape[1]

    def lengths(self) -> torch.Tensor:
        """Tokens held per row (the next token's position id)."""
        return self.valid.sum(dim=1)

    def append_row(self, cache: DynamicCache, valid: torch.Tensor) -> None:
        """Add one sequence's cache (batch 1, all columns valid per `valid`) as the last row."""
        if self.cache is None or self.rows == 0:
            self.cache, self.valid = cache, valid.clone()
            return
        width = max(self.columns, valid.shape[1])
        mine, theirs = width - self.columns, width - valid.shape[1]
        for ours, new in zip(_layers(self.cache), _layers(cache), strict=True):
            ours.keys = torch.cat([_left_pad(ours.keys, mine), _left_pad(new.keys, theirs)], dim=0)
            ours.values = torch.cat([_left_pad(ours.values, mine), _left_pad(new.values, theirs)], dim=0)
        self.valid = torch.cat([_left_pad_mask(self.valid, mine), _left_pad_mask(valid, theirs)], dim=0)

    def keep_rows(self, rows: list[int]) -> None:
        """Drop every row not listed (finished or cancelled sequences), then trim shared padding."""
        if not rows:
            self.cache, self.valid = None, torch.zeros((0, 0), dtype=torch.bool)
            return
        if rows != list(range(self.rows)):
            index = torch.tensor(rows, dtype=torch.long)
            for layer in self._layers():
                layer.keys = layer.keys.index_select(0, index)
                layer.values = layer.values.index_select(0, index)
            self.valid = self.valid.index_select(0, index)
        self._trim_leading()

    def row_layers(self, row: int, tokens: int) -> Layers:
        """A copy of the first `tokens` valid positions of `row`, holes and padding squeezed out."""
        columns = torch.nonzero(self.valid[row]).flatten()[:tokens]
        return [(layer.keys[row : row + 1].index_select(2, columns),
                 layer.values[row : row + 1].index_select(2, columns)) for layer in self._layers()]

    def invalidate_tail(self, row: int, count: int) -> None:
        """Mark the last `count` valid columns of `row` invalid (rejected speculative tokens)."""
        if count <= 0:
            return
        columns = torch.nonzero(self.valid[row]).flatten()[-count:]
        self.valid[row, columns] = False

    def compact(self, min_waste: float = 0.25) -> None:
        """Right-align every row's valid columns when more than `min_waste` of the cache is holes."""
        if self.rows == 0:
            return
        lengths = self.lengths()
        width = int(lengths.max())
        if 1.0 - float(lengths.sum()) / (self.rows * self.columns) <= min_waste:
            return
        # For each row, the source column of every target column (right-aligned); padding reads column 0.
        source = torch.zeros((self.rows, width), dtype=torch.long)
        valid = torch.zeros((self.rows, width), dtype=torch.bool)
        for row in range(self.rows):
            columns = torch.nonzero(self.valid[row]).flatten()
            source[row, width - len(columns) :] = columns
            valid[row, width - len(columns) :] = True
        for layer in self._layers():
            index = source[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = torch.gather(layer.keys, 2, index)
            layer.values = torch.gather(layer.values, 2, index)
        self.valid = valid

    def _layers(self) -> list[KVLayer]:
        """The batch cache's layers: there is a cache whenever there are rows to work on."""
        assert self.cache is not None, "the batch holds no rows"
        return _layers(self.cache)

    def _trim_leading(self) -> None:
        used = self.valid.any(dim=0)
        first = int(torch.argmax(used.int())) if used.any() else self.columns
        if first:
            for layer in self._layers():
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]
            self.valid = self.valid[:, first:]


def _left_pad(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    if not columns:
        return tensor
    shape = list(tensor.shape)
    shape[2] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=2)


def _left_pad_mask(mask: torch.Tensor, columns: int) -> torch.Tensor:
    if not columns:
        return mask
    return torch.cat([mask.new_zeros((mask.shape[0], columns)), mask], dim=1)


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions of every layer (a rejected draft's, or a scorer's suffix)."""
    for layer in _layers(cache):
        if layer.keys.shape[-2] > length:
            layer.keys = layer.keys[:, :, :length]
            layer.values = layer.values[:, :, :length]
