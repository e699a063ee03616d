"""Automatic prefix caching: a prompt that starts like an earlier one skips prefilling that start.

On a CPU prefill is the slow part of a short request (the 1.5B prefills a few dozen tokens a second on
one core), and most prompts repeat a long start: the chat template and system prompt on every request,
the whole conversation so far on every later turn of a chat, the same document under a new question.
The scheduler keeps the KV of recent prompts and finished sequences here; a new prompt copies the
longest stored prefix and prefills only the rest. vLLM hashes fixed-size KV blocks on the GPU; with a
handful of sequences on a CPU, a scan over whole entries is enough.

Entries are scoped (the gateway passes the tenant): a prompt only reuses KV that its own tenant's
requests computed, so time to first token cannot tell one tenant what another asked (vLLM's cache_salt).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

Layers = list[tuple[torch.Tensor, torch.Tensor]]
"""Per model layer, (keys, values) of one sequence: each (1, kv heads, tokens, head dim)."""


@dataclass
class _Entry:
    scope: str
    ids: np.ndarray
    layers: Layers

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)


@dataclass(frozen=True)
class PrefixMatch:
    tokens: int  # prompt tokens whose KV is reused (0: none)
    layers: Layers


NO_MATCH = PrefixMatch(0, [])


class PrefixCache:
    """Least-recently-used store of (token ids → KV), bounded in bytes. Used from one thread (the
    scheduler's), like the model."""

    def __init__(self, max_bytes: int, *, min_tokens: int = 8):
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens  # shorter matches are not worth a copy
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        self._next_key = 0
        self.nbytes = 0
        self.hit_tokens = 0  # prompt tokens reused so far (vLLM's prefix_cache_hits)

    @classmethod
    def of_megabytes(cls, megabytes: float) -> PrefixCache | None:
        """A cache of that size, or None for 0 (prefix caching off)."""
        return cls(int(megabytes * 2**20)) if megabytes > 0 else None

    @property
    def entries(self) -> int:
        return len(self._entries)

    def match(self, scope: str, ids: list[int]) -> PrefixMatch:
        """The longest stored prefix of `ids` in `scope`; at most len(ids) - 1 tokens, since the last
        prompt token must go through the model to give the next token's logits."""
        query = np.asarray(ids)
        best, best_key = 0, None
        for key, entry in self._entries.items():
            if entry.scope == scope and (common := common_prefix(entry.ids, query)) > best:
                best, best_key = common, key
        best = min(best, len(ids) - 1)
        if best_key is None or best < self.min_tokens:
            return NO_MATCH
        self._entries.move_to_end(best_key)
        self.hit_tokens += best
        return PrefixMatch(best, [(k[:, :, :best], v[:, :, :best]) for k, v in self._entries[best_key].layers])

    def store(self, scope: str, ids: list[int], layers: Layers) -> None:
        """Keep the KV of `ids` (`layers` may hold more positions; only the first len(ids) are kept).
        Entries the new one extends are dropped; if a stored entry already extends it, that one is kept."""
        if len(ids) < self.min_tokens or not layers or any(k.shape[2] < len(ids) for k, _ in layers):
            return  # (fewer positions than tokens: a sliding-window layer, whose KV cannot be reused)
        entry = _Entry(scope, np.asarray(ids), [(_first(k, len(ids)), _first(v, len(ids))) for k, v in layers])
        if entry.nbytes > self.max_bytes:
            return
        for key, stored in list(self._entries.items()):
            if stored.scope != scope:
                continue
            common = common_prefix(stored.ids, entry.ids)
            if common == len(entry.ids):
                self._entries.move_to_end(key)
                return
            if common == len(stored.ids):
                self._drop(key)
        self._entries[self._next_key] = entry
        self._next_key += 1
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        self.nbytes -= self._entries.pop(key).nbytes


def _first(tensor: torch.Tensor, tokens: int) -> torch.Tensor:
    """The first `tokens` positions, copied when that is not all of them (a view would keep the rest alive)."""
    return tensor[:, :, :tokens].clone() if tensor.shape[2] > tokens else tensor


def common_prefix(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    """How many leading tokens `a` and `b` share; also how a draft model finds where its own KV stops
    matching the sequence (drafters/model.py). One vectorised comparison, not a Python loop per token."""
    a, b = np.asarray(a), np.asarray(b)
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n
