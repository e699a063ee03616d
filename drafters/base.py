"""The Drafter seam: propose up to k tokens that the target model then verifies in one pass.

Proposals never change what is generated — the target accepts or replaces every draft token (see
drafters/verify.py) — they only change how many target passes it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from engine.types import SamplingParams

if TYPE_CHECKING:  # config tools (vllm-args, config check) import drafters without paying for torch
    import torch


@dataclass
class Draft:
    """Proposed tokens and, for drafters that sample from a distribution, that distribution per token
    (shape (len(tokens), vocab)); None means the proposal is deterministic (a point mass)."""

    tokens: list[int]
    probs: torch.Tensor | None = None


EMPTY = Draft(tokens=[])


class DraftContext(Protocol):
    """What a drafter may look at: the sequence so far and optional reference text for retrieval."""

    id: int
    all_ids: list[int]
    reference_ids: list[int]
    params: SamplingParams


class Drafter(Protocol):
    name: str
    cost: float  # target decode steps per drafted token: 0 for a lookup (drafters/adaptive.py uses it)

    def propose(self, seq: DraftContext, k: int, *, greedy: bool) -> Draft: ...

    def release(self, seq: DraftContext) -> None:
        """The sequence finished or left: drop any per-sequence state."""
        ...
