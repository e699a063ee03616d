"""Second stage of a semantic hit: a small learned verifier over cheap features of the two prompts.

Why: cosine similarity alone cannot separate paraphrases from different questions that share most of their
words (the two ranges overlap), and the lexical guards that catch those also veto many true paraphrases. So
the guards (guards.GUARDS) are split in two: the hard ones stay absolute; the soft ones (names on one side
only, a one-word swap, a different question type) become features, beside word overlap, words added on one
side, length and the cosine. A verdict is a few features and a dot product or a tiny MLP per candidate,
never a call to a generating model (that is the judge's job, judge.py).

Three models (`cache.verifier_model`), each fitted on bench/cache/pairs.jsonl only, with the probability a
hit needs chosen there too (models.py, weights/<model>.json); the holdouts are never used for either:
- "lexical": a logistic regression on the features above;
- "aligned": adds word-alignment scores in MiniLM's input table (alignment.py: is every content word of one
  prompt matched by a word of the other?), to see one-word swaps the lexical features miss; a bagged MLP;
- "contextual" (the default): adds the same alignment over MiniLM's contextual token outputs (contextual.py,
  function words included) and, per side, the content words left unmatched at a stricter match (an added
  qualifier); a few ms of model per prompt instead of µs, so it runs in a worker thread.
bench/cache/RESULTS.md compares them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import astuple, dataclass

from gateway.cache.matching import VerifierModel, guards, models
from gateway.cache.matching.alignment import shared_aligner
from gateway.cache.matching.contextual import shared_contextual_aligner

SOFT_FEATURES = ("entity", "substitution", "intent")
"""The soft guards' features, in guards.SOFT order."""
FEATURES = ("cosine", *SOFT_FEATURES, "overlap", "changed", "length", "added_only")
ALIGNED_FEATURES = (*FEATURES, "align_worst", "align_mean", "unmatched", "unmatched_weight")
CONTEXTUAL_FEATURES = (*ALIGNED_FEATURES, "context_worst", "context_mean", "context_unmatched",
                       "context_unmatched_weight", "context_weighted_mean", "strict_more_weight",
                       "strict_less_weight", "strict_more_count", "strict_less_count")
MLP_MODELS: tuple[VerifierModel, ...] = ("aligned", "contextual")
"""The models that are a bagged MLP (models.BaggedMlp); "lexical" is a logistic regression."""


def features(query: str, cached: str, similarity: float,
             signals: tuple[str | None, ...] | None = None) -> tuple[float, ...]:
    """The verifier's inputs, in FEATURES order."""
    signals = guards.soft_signals(query, cached) if signals is None else signals
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
    """P(the cached prompt asks the same as the query), by the lexical model (a logistic regression)."""
    return models.load_logistic("lexical").probability(features)


def logit(probability: float) -> float:
    """A probability as log-odds, clipped to ±9.2 so a sure 0 or 1 stays a finite piece of evidence."""
    p = min(max(probability, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def model_probability(query: str, cached: str, similarity: float, model: VerifierModel,
                      signals: tuple[str | None, ...] | None = None) -> float:
    """P(paraphrase) by the chosen model (no hard guards applied)."""
    if model == "lexical":
        return probability(features(query, cached, similarity, signals))
    return models.load_mlp(model).probability(FEATURIZERS[model](query, cached, similarity, signals))


def default_min_probability(model: VerifierModel) -> float:
    """The probability a hit needs, as chosen for `model` on the tuning set."""
    fitted = models.load_logistic(model) if model == "lexical" else models.load_mlp(model)
    return fitted.min_probability


def warm(model: VerifierModel) -> None:
    """Load what the model needs (a 47 MB table; the contextual one also MiniLM's first layers) before the
    first lookup does."""
    default_min_probability(model)  # reads the fitted weights
    if model in MLP_MODELS:
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
    if (reason := guards.hard_veto(query, cached)) is not None:
        return Assessment(reason)
    signals = guards.soft_signals(query, cached)
    return Assessment(None, model_probability(query, cached, similarity, model, signals), signals)


def verdict(query: str, cached: str, similarity: float, min_probability: float | None = None,
            model: VerifierModel = "lexical") -> str | None:
    """Why `cached` must not answer `query`, or None for a hit (Assessment.veto). None for
    `min_probability`: the model's own."""
    bar = default_min_probability(model) if min_probability is None else min_probability
    return assess(query, cached, similarity, model).veto(bar)
