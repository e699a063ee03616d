"""The Drafter seam: propose up to k tokens that the target model then verifies in one pass.

Proposals never change what is generated — the target accepts or replaces every draft token (see
engine/verify.py) — they only change how many target passes it takes.

The engine owns this seam and the drafters/ package implements it: the engine never imports a
drafter, it is handed a `DrafterFactory` (drafters.build.build_drafter, wired in by the gateway's
embedded backend, the one composition point) and calls it once the target has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from engine.types import SamplingParams

if TYPE_CHECKING:  # drafters' config tools (vllm-args, config check) import this seam without paying for torch
    import torch

    from engine.loader import LoadedModel
    from engine.speculative import SpeculativeConfig


@dataclass
class Draft:
    """Proposed tokens and, for drafters that sample from a distribution, that distribution per token
    (shape (len(tokens), vocab)); None means the proposal is deterministic (a point mass)."""

    tokens: list[int]
    probs: torch.Tensor | None = None
    source: str = ""  # the drafter that proposed it: acceptance is tracked per source (engine/adaptive.py)


EMPTY = Draft(tokens=[])


class DraftContext(Protocol):
    """What a drafter may look at: the sequence so far and optional reference text for retrieval.
    Read-only properties, so that a sequence may compute them (`all_ids` is prompt + output)."""

    @property
    def id(self) -> int: ...
    @property
    def all_ids(self) -> list[int]: ...
    @property
    def output_ids(self) -> list[int]: ...
    @property
    def reference_ids(self) -> list[int]: ...
    @property
    def cache_scope(self) -> str: ...
    @property
    def params(self) -> SamplingParams: ...

    def draft_k(self, source: str, cost: float) -> int:
        """How many tokens `source` should draft now: cost-aware k from this sequence's acceptance of its
        earlier drafts (each source keeps its own, so a lookup that keeps hitting is not held back by a
        draft model that keeps missing)."""
        ...


class Drafter(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def cost(self) -> float:
        """Target decode steps per drafted token: 0 for a lookup (engine/adaptive.py uses it)."""
        ...

    def propose(self, seq: DraftContext, k: int, *, greedy: bool) -> Draft:
        """At most `k` tokens (the configured maximum, less what the request may still generate);
        drafters size their drafts below that with `seq.draft_k`."""
        ...

    def release(self, seq: DraftContext) -> None:
        """The sequence finished or left: drop any per-sequence state."""
        ...


class DrafterFactory(Protocol):
    def __call__(self, config: SpeculativeConfig, target: LoadedModel, *, progress: bool,
                 prefix_cache_mb: float) -> Drafter | None:
        """The drafter `config` asks for, for this loaded target (None for method none).
        `prefix_cache_mb`: memory for a draft model's own reusable prompt KV (0: none)."""
        ...
