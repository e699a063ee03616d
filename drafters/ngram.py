"""Prompt-lookup / retrieval drafting: copy what followed an earlier occurrence of the sequence's last
n tokens.

Input-grounded tasks (code edits, summaries, RAG) repeat long spans of the prompt; near-duplicate
requests repeat a cached answer (REST-style retrieval: the gateway passes the best cached response
for a similar prompt as `reference_ids`). Both are found by the same suffix match, at no model cost.

In the prompt and the text so far the latest occurrence is the best guess (recent context). In a
reference answer the best guess is the occurrence aligned with how far the answer has got: a phrase
that appears twice in the reference ("the function", a repeated code line) must continue from the
copy we are currently following, not jump ahead or back. So per sequence we remember where in the
reference the last proposal ended and pick the occurrence nearest to where that has moved to.

While the sequence copies its source word for word (every token since the last proposal matched it,
or the answer so far starts like the cached one), the next tokens are very likely copied too: then we
draft as far as the engine allows instead of the cautious cost-aware k, which the misses after an
answer diverges from its reference would otherwise keep short (bench/spec: +5–15% on near-duplicates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.drafting import EMPTY, Draft, DraftContext


@dataclass
class _Alignment:
    """Where the last proposal was copied from: `end` indexes the copied-from text (the reference, or
    the sequence itself for prompt lookup) at the point aligned with the sequence's length `generated`."""

    in_reference: bool
    end: int
    generated: int


@dataclass
class NgramDrafter:
    max_ngram: int = 4
    min_ngram: int = 1
    use_reference: bool = True
    name: str = "ngram"
    cost: float = 0.0
    _aligned: dict[int, _Alignment] = field(default_factory=dict, repr=False)

    def propose(self, seq: DraftContext, k: int, *, greedy: bool = True) -> Draft:
        reference = seq.reference_ids if self.use_reference else []
        following = self._following(seq, reference)
        if following is not None:  # every token since the last copy matched it: keep copying, as far as allowed
            in_reference, end = following
            return self._copy(seq, reference if in_reference else seq.all_ids, in_reference, end, k)
        k = min(k, seq.draft_k(self.name, self.cost))
        tokens = seq.all_ids
        for n in range(min(self.max_ngram, len(tokens) - 1), self.min_ngram - 1, -1):
            suffix = tokens[-n:]
            if reference:  # a cached answer predicts better than the prompt
                ends = _match_ends(reference, suffix)
                if ends:
                    return self._copy(seq, reference, True, min(ends, key=self._nearest(seq, len(suffix))), k)
            latest = _latest_end(tokens, suffix)
            if latest is not None:
                return self._copy(seq, tokens, False, latest, k)
        return EMPTY

    def _following(self, seq: DraftContext, reference: list[int]) -> tuple[bool, int] | None:
        """(in the reference?, where) if the sequence has copied its source exactly since the last proposal;
        before any proposal, a sequence that starts like the reference is following it from its start."""
        previous = self._aligned.get(seq.id)
        if previous is None:
            in_reference, start, since = True, 0, seq.output_ids
            corpus = reference
        else:
            in_reference, start, since = previous.in_reference, previous.end, seq.all_ids[previous.generated:]
            corpus = reference if in_reference else seq.all_ids
        end = start + len(since)
        if since and end < len(corpus) and corpus[start:end] == since:
            return in_reference, end
        return None

    def _nearest(self, seq: DraftContext, matched: int) -> Callable[[int], tuple[int, int]]:
        """Sort key for reference matches: nearest to where the previous reference copy has moved to."""
        previous = self._aligned.get(seq.id)
        if previous is not None and previous.in_reference:
            expected = previous.end + len(seq.all_ids) - previous.generated
        else:
            expected = matched
        return lambda end: (abs(end - expected), end)

    def _copy(self, seq: DraftContext, corpus: list[int], in_reference: bool, end: int, k: int) -> Draft:
        self._aligned[seq.id] = _Alignment(in_reference=in_reference, end=end, generated=len(seq.all_ids))
        return Draft(tokens=corpus[end : end + k], source=self.name)

    def release(self, seq: DraftContext) -> None:
        self._aligned.pop(seq.id, None)


def _match_ends(corpus: list[int], suffix: list[int]) -> list[int]:
    """End indices of every occurrence of `suffix` in `corpus` that has at least one token after it."""
    n, first = len(suffix), suffix[0]
    return [start + n for start in range(len(corpus) - n)
            if corpus[start] == first and corpus[start : start + n] == suffix]


def _latest_end(tokens: list[int], suffix: list[int]) -> int | None:
    """End index of the latest earlier occurrence of `suffix` in `tokens` (not the suffix itself)."""
    n, first = len(suffix), suffix[0]
    for start in range(len(tokens) - n - 1, -1, -1):
        if tokens[start] == first and tokens[start : start + n] == suffix:
            return start + n
    return None
