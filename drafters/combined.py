"""Try drafters in order and use the first that proposes anything (e.g. n-gram, then a draft model)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.drafting import EMPTY, Draft, DraftContext, Drafter


@dataclass
class FirstProposal:
    drafters: list[Drafter]

    @property
    def name(self) -> str:
        return "+".join(drafter.name for drafter in self.drafters)

    @property
    def cost(self) -> float:
        return max(drafter.cost for drafter in self.drafters)

    def propose(self, seq: DraftContext, k: int, *, greedy: bool) -> Draft:
        for drafter in self.drafters:
            draft = drafter.propose(seq, k, greedy=greedy)
            if draft.tokens:
                return draft
        return EMPTY

    def release(self, seq: DraftContext) -> None:
        for drafter in self.drafters:
            drafter.release(seq)
