"""Prompt-lookup / retrieval drafting: copy what followed the latest earlier occurrence of the
sequence's last n tokens.

Input-grounded tasks (code edits, summaries, RAG) repeat long spans of the prompt; near-duplicate
requests repeat a cached answer (REST-style retrieval: the gateway passes the best cached response
for a similar prompt as `reference_ids`). Both are found by the same suffix match, at no model cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from drafters.base import EMPTY, Draft, DraftContext


@dataclass
class NgramDrafter:
    max_ngram: int = 4
    min_ngram: int = 1
    use_reference: bool = True
    name: str = "ngram"

    def propose(self, seq: DraftContext, k: int, *, greedy: bool = True) -> Draft:
        tokens = seq.all_ids
        corpora = [tokens]
        if self.use_reference and seq.reference_ids:
            corpora.insert(0, seq.reference_ids)  # a cached answer predicts better than the prompt
        for n in range(min(self.max_ngram, len(tokens) - 1), self.min_ngram - 1, -1):
            suffix = tokens[-n:]
            for corpus in corpora:
                found = _continuation(corpus, suffix, k, exclude_tail=corpus is tokens)
                if found:
                    return Draft(tokens=found)
        return EMPTY

    def release(self, seq: DraftContext) -> None:
        pass


def _continuation(corpus: list[int], suffix: list[int], k: int, *, exclude_tail: bool) -> list[int]:
    """Tokens after the latest occurrence of `suffix` in `corpus` (not the suffix itself)."""
    n = len(suffix)
    last_start = len(corpus) - n - (1 if exclude_tail else 0)
    first = suffix[0]
    for start in range(last_start, -1, -1):
        if corpus[start] == first and corpus[start : start + n] == suffix:
            follow = corpus[start + n : start + n + k]
            if follow:
                return follow
    return []
