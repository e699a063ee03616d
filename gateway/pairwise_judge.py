"""A pairwise judge for prompts without ground truth: which of two answers is better, or a tie.

Why both orders: language-model judges favour one position (often the first answer). Each pair is
judged as A/B and again as B/A; a tier wins only if it wins on balance over the two (a win and a tie
is a win, a win each way is a tie), so a judge that always says "A" labels every pair a tie rather than
a win for whichever tier happened to come first.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["weak", "strong", "tie", "unclear", "identical"]
Ask = Callable[[list[dict[str, Any]]], Awaitable[str]]  # a chat in, the judge model's reply out

INSTRUCTIONS = (
    "You compare two answers to the same user request. Judge which answer is more correct, complete and "
    "helpful; length alone is no merit. Reply with one word: A if answer A is better, B if answer B is "
    "better, or tie if they are equally good."
)
_VERDICT = re.compile(r"^\W*(?:answer\s*)?(a|b|tie)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Comparison:
    strong_quality: float  # 1.0 strong better, 0.0 weak better, 0.5 tie
    verdicts: tuple[Verdict, ...]  # the winner in each order asked (A/B = weak/strong, then strong/weak)

    @property
    def weak_quality(self) -> float:
        return 1.0 - self.strong_quality


def judge_messages(request: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"[User request]\n{request}\n\n[Answer A]\n{answer_a}\n\n"
                                        f"[Answer B]\n{answer_b}\n\nWhich answer is better: A, B or tie?"}]


def parse_verdict(reply: str) -> Literal["a", "b", "tie"] | None:
    """The reply's leading A / B / tie ("Answer B.", "tie"), else None (counted as a tie)."""
    match = _VERDICT.match(reply)
    return None if match is None else match.group(1).lower()  # type: ignore[return-value]


class PairwiseJudge:
    def __init__(self, ask: Ask):
        self.ask = ask

    async def compare(self, request: str, weak: str, strong: str) -> Comparison:
        """Identical answers are a tie without asking (two tiers often agree word for word on short answers)."""
        if weak.strip() == strong.strip():
            return Comparison(0.5, ("identical",))
        first, second = await asyncio.gather(self.ask(judge_messages(request, weak, strong)),
                                             self.ask(judge_messages(request, strong, weak)))
        verdicts = (_winner(parse_verdict(first), a="weak", b="strong"),
                    _winner(parse_verdict(second), a="strong", b="weak"))
        balance = sum({"strong": 1, "weak": -1}.get(v, 0) for v in verdicts)
        return Comparison(1.0 if balance > 0 else 0.0 if balance < 0 else 0.5, verdicts)


def _winner(choice: str | None, *, a: Verdict, b: Verdict) -> Verdict:
    return "unclear" if choice is None else "tie" if choice == "tie" else a if choice == "a" else b
