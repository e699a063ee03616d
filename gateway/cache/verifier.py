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

Two models (`cache.verifier_model`): "lexical", the logistic regression above, and "aligned", which adds
word-alignment scores (gateway/cache/alignment.py: is every content word of one prompt matched by a
word of the other?) and a small MLP (gateway/cache/verifier_mlp.py), to see one-word swaps the lexical
features miss. A third, "contextual" (the default since 2026-11-30, night), adds the same alignment over
MiniLM's contextual token outputs (gateway/cache/contextual.py: BERTScore-style, function words included)
and, per side, the content words left unmatched at a stricter match (alignment.one_sided: a qualifier added
on one side only); it costs a few ms of model per prompt instead of µs. bench/cache/RESULTS.md compares them.

The hard guards include opposite prefixes (hide/unhide, mute/unmute) and particles (zoom in/zoom out)
besides the listed antonyms, and different question words (when/where/why/who: guards.question_word_mismatch,
a swap no model feature saw as one; guards.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import astuple, dataclass

from gateway.cache import guards, verifier_mlp
from gateway.cache.alignment import shared_aligner
from gateway.cache.config import VerifierModel
from gateway.cache.contextual import shared_contextual_aligner

HARD_GUARDS: tuple[Callable[[str, str], str | None], ...] = (
    guards.number_mismatch, guards.negation_mismatch, guards.antonym_mismatch, guards.direction_mismatch,
    guards.prefix_mismatch, guards.particle_mismatch, guards.toggle_mismatch, guards.question_word_mismatch,
)

FEATURES = ("cosine", "entity", "substitution", "intent", "overlap", "changed", "length", "added_only")
ALIGNED_FEATURES = (*FEATURES, "align_worst", "align_mean", "unmatched", "unmatched_weight")
CONTEXTUAL_FEATURES = (*ALIGNED_FEATURES, "context_worst", "context_mean", "context_unmatched",
                       "context_unmatched_weight", "context_weighted_mean", "strict_more_weight",
                       "strict_less_weight", "strict_more_count", "strict_less_count")
MLP_MODELS: tuple[VerifierModel, ...] = ("aligned", "contextual")
"""The models that are a bagged MLP (verifier_mlp.py), each with its own weights file."""
MIN_PROBABILITY = 0.80
"""The lexical model's, by the rule "lowest with cross-validated false hits <= 1% on pairs.jsonl" on a 0.05
grid (on a 0.01 grid it would be 0.77; kept as measured on the holdouts)."""

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


def aligned_features(query: str, cached: str, similarity: float,
                     signals: tuple[str | None, ...] | None = None) -> tuple[float, ...]:
    """The aligned model's inputs, in ALIGNED_FEATURES order."""
    return (*features(query, cached, similarity, signals), *shared_aligner().align(query, cached).scores())


def contextual_features(query: str, cached: str, similarity: float,
                        signals: tuple[str | None, ...] | None = None) -> tuple[float, ...]:
    """The contextual model's inputs, in CONTEXTUAL_FEATURES order."""
    aligner = shared_contextual_aligner()
    return (*aligned_features(query, cached, similarity, signals), *astuple(aligner.align(query, cached)),
            *aligner.one_sided(query, cached))


FEATURIZERS: dict[VerifierModel, Callable[..., tuple[float, ...]]] = {
    "lexical": features, "aligned": aligned_features, "contextual": contextual_features}


def probability(features: tuple[float, ...]) -> float:
    """P(the cached prompt asks the same as the query), by the fitted logistic regression."""
    z = BIAS + sum(w * x for w, x in zip(WEIGHTS, features, strict=True))
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def logit(probability: float) -> float:
    """A probability as log-odds, clipped to ±9.2 so a sure 0 or 1 stays a finite piece of evidence."""
    p = min(max(probability, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def model_probability(query: str, cached: str, similarity: float, model: VerifierModel,
                      signals: tuple[str | None, ...] | None = None) -> float:
    """P(paraphrase) by the chosen model (no hard guards applied)."""
    if model == "lexical":
        return probability(features(query, cached, similarity, signals))
    return verifier_mlp.load(model).probability(FEATURIZERS[model](query, cached, similarity, signals))


def default_min_probability(model: VerifierModel) -> float:
    """The probability a hit needs, as chosen for `model` on the tuning set."""
    return MIN_PROBABILITY if model == "lexical" else verifier_mlp.load(model).min_probability


def warm(model: VerifierModel) -> None:
    """Load what the model needs (a 47 MB table; the contextual one also MiniLM's first layers) before the
    first lookup does."""
    if model in MLP_MODELS:
        verifier_mlp.load(model)
        shared_aligner()
    if model == "contextual":
        shared_contextual_aligner()


def needs_model_call(model: VerifierModel) -> bool:
    """Whether a verdict may run a transformer (milliseconds: keep it off the event loop)."""
    return model == "contextual"


@dataclass(frozen=True)
class Assessment:
    """What the verifier makes of a candidate: a hard guard's reason (absolute), else P(paraphrase) and the
    soft guards' reasons, for the caller to hold against its bar (or, with a judge, to weigh with it)."""

    hard: str | None
    probability: float = 0.0
    signals: tuple[str | None, ...] = ()

    def veto(self, min_probability: float) -> str | None:
        """Why this candidate fails `min_probability`, or None: the hard guard's reason, else the first soft
        guard's reason (or "verifier") with the probability."""
        if self.hard is not None:
            return self.hard
        if self.probability >= min_probability:
            return None
        return f"{next((s for s in self.signals if s is not None), 'verifier')} (p={self.probability:.2f})"


def assess(query: str, cached: str, similarity: float, model: VerifierModel = "lexical") -> Assessment:
    """The hard guards, then (if none fires) the model's probability."""
    for guard in HARD_GUARDS:
        if (reason := guard(query, cached)) is not None:
            return Assessment(reason)
    signals = soft_signals(query, cached)
    return Assessment(None, model_probability(query, cached, similarity, model, signals), signals)


def verdict(query: str, cached: str, similarity: float, min_probability: float | None = None,
            model: VerifierModel = "lexical") -> str | None:
    """Why `cached` must not answer `query`, or None for a hit (Assessment.veto). None for
    `min_probability`: the model's own."""
    bar = default_min_probability(model) if min_probability is None else min_probability
    return assess(query, cached, similarity, model).veto(bar)
