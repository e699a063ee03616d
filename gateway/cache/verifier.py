"""Second stage of a semantic hit: a tiny learned verifier over cheap features of the two prompts.

Cosine similarity alone cannot separate paraphrases (often 0.65-0.85) from different questions that
share most of their words (0.80-0.92), and the lexical guards that catch those also veto many true
paraphrases ("HTTP 404" vs "404", "brief"/"short"). So the guards are split in two:

- hard vetoes (numbers, negation, opposites, direction): almost never wrong, they stay absolute;
- soft signals (names only on one side, a one-word swap, a different question type, words added on
  one side, word overlap, length): features of a logistic regression, together with the cosine.

The weights are trained on bench/cache/pairs.jsonl only (`python -m bench.cache.train_verifier`, which
prints the constants below), and the probability a hit needs (`cache.verifier_min_probability`) was
chosen there too; the holdouts were never used for either. A verdict costs tens of µs of Python per
candidate, no model call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gateway.cache import guards

HARD_GUARDS: tuple[Callable[[str, str], str | None], ...] = (
    guards.number_mismatch, guards.negation_mismatch, guards.antonym_mismatch, guards.direction_mismatch,
)

FEATURES = ("cosine", "entity", "substitution", "intent", "overlap", "changed", "length", "added_only")

WEIGHTS = (25.3560, -0.8027, -1.4673, -1.3195, -4.7067, -0.0041, 1.2148, -1.6256)
BIAS = -17.4425
"""Fitted by bench/cache/train_verifier.py on pairs.jsonl; FEATURES gives their order."""

SOFT_GUARDS: tuple[Callable[[str, str], str | None], ...] = (
    guards.entity_mismatch, guards.substitution_mismatch, guards.intent_mismatch,
)


def soft_signals(query: str, cached: str) -> tuple[str | None, ...]:
    """What each soft guard says (its reason, or None), in SOFT_GUARDS order."""
    return tuple(guard(query, cached) for guard in SOFT_GUARDS)


def features(query: str, cached: str, similarity: float,
             signals: tuple[str | None, ...] | None = None) -> tuple[float, ...]:
    """The verifier's inputs, in FEATURES order."""
    signals = soft_signals(query, cached) if signals is None else signals
    query_words, cached_words = set(guards.content_words(query)), set(guards.content_words(cached))
    union = query_words | cached_words
    overlap = len(query_words & cached_words) / len(union) if union else 1.0
    length = abs(math.log((len(query_words) + 1) / (len(cached_words) + 1)))
    only_query, only_cached = len(query_words - cached_words), len(cached_words - query_words)
    added_only = min(only_query, only_cached) == 0 < max(only_query, only_cached)  # a qualifier: "local branch"
    return (similarity, float(min(3, guards.unmatched_entities(query, cached))),
            *(float(signal is not None) for signal in signals[1:]), overlap, float(only_query + only_cached),
            length, float(added_only))


def probability(features: tuple[float, ...]) -> float:
    """P(the cached prompt asks the same as the query), by the fitted logistic regression."""
    z = BIAS + sum(w * x for w, x in zip(WEIGHTS, features, strict=True))
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def verdict(query: str, cached: str, similarity: float, min_probability: float) -> str | None:
    """Why `cached` must not answer `query`, or None for a hit: a hard guard's reason, else (when the
    verifier says no) the first soft guard's reason or "verifier", with the probability."""
    for guard in HARD_GUARDS:
        if (reason := guard(query, cached)) is not None:
            return reason
    signals = soft_signals(query, cached)
    p = probability(features(query, cached, similarity, signals))
    if p >= min_probability:
        return None
    return f"{next((s for s in signals if s is not None), 'verifier')} (p={p:.2f})"
