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
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drafters.base import EMPTY, Draft, DraftContext


@dataclass
class _Alignment:
    reference_end: int  # index in the reference just after the matched suffix
    generated: int  # len(all_ids) when that match was made


@dataclass
class NgramDrafter:
    max_ngram: int = 4
    min_ngram: int = 1
    use_reference: bool = True
    name: str = "ngram"
    cost: float = 0.0
    _aligned: dict[int, _Alignment] = field(default_factory=dict, repr=False)

    def propose(self, seq: DraftContext, k: int, *, greedy: bool = True) -> Draft:
        tokens = seq.all_ids
        reference = seq.reference_ids if self.use_reference else []
        for n in range(min(self.max_ngram, len(tokens) - 1), self.min_ngram - 1, -1):
            suffix = tokens[-n:]
            if reference:  # a cached answer predicts better than the prompt
                found = self._from_reference(seq, reference, suffix, k)
                if found:
                    return Draft(tokens=found)
            found = _latest_continuation(tokens, suffix, k)
            if found:
                return Draft(tokens=found)
        return EMPTY

    def _from_reference(self, seq: DraftContext, reference: list[int], suffix: list[int], k: int) -> list[int]:
        ends = _match_ends(reference, suffix)
        if not ends:
            return []
        previous = self._aligned.get(seq.id)
        expected = previous.reference_end + len(seq.all_ids) - previous.generated if previous else len(suffix)
        end = min(ends, key=lambda e: (abs(e - expected), e))
        self._aligned[seq.id] = _Alignment(reference_end=end, generated=len(seq.all_ids))
        return reference[end : end + k]

    def release(self, seq: DraftContext) -> None:
        self._aligned.pop(seq.id, None)


def _match_ends(corpus: list[int], suffix: list[int]) -> list[int]:
    """End indices of every occurrence of `suffix` in `corpus` that has at least one token after it."""
    n, first = len(suffix), suffix[0]
    return [start + n for start in range(len(corpus) - n)
            if corpus[start] == first and corpus[start : start + n] == suffix]


def _latest_continuation(tokens: list[int], suffix: list[int], k: int) -> list[int]:
    """Tokens after the latest earlier occurrence of `suffix` in `tokens` (not the suffix itself)."""
    n, first = len(suffix), suffix[0]
    for start in range(len(tokens) - n - 1, -1, -1):
        if tokens[start] == first and tokens[start : start + n] == suffix:
            return tokens[start + n : start + n + k]
    return []
