"""Word-level alignment of two prompts, for the semantic-hit verifier (gateway/cache/verifier.py).

A pooled sentence vector cannot say *which* word differs: "zoom in" / "zoom out" or "in a microwave" /
"on the stove" sit at cosine 0.85-0.97, as high as true rewordings. Aligning the words can: each content
word of one prompt is matched to its most similar word of the other, in MiniLM's own static input
word-embedding table (the one router_models/static.py reads; no extra model, no transformer call). A
rewording matches every word to itself or a near-synonym; a one-word swap leaves one word unmatched.
Rare words weigh more (smooth inverse frequency, as the static router encoder weights them): an
unmatched "microwave" matters, an unmatched "quickly" less so.

Cost: one tokenisation and one small matrix product per prompt pair, cached per prompt.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.cache import guards

MATCHED = 0.5
"""Cosine in the input table above which two words count as matched (same word = 1; inflections,
synonyms and close terms mostly 0.5-0.8; unrelated words below 0.3)."""


@dataclass(frozen=True)
class Alignment:
    """How well the content words of two prompts match each other."""

    worst: float  # the least-matched content word of either side: its best cosine on the other side
    mean: float  # mean best cosine over both sides' content words
    unmatched: float  # content words of either side below MATCHED
    unmatched_weight: float  # their SIF weights summed (rare words ~1, frequent ones ~0)


@dataclass(frozen=True)
class _Words:
    vectors: np.ndarray  # (n, 384) L2-normalised, one row per content word
    weights: np.ndarray  # (n,) SIF weight of each word (its rarest piece)


class Aligner:
    """Embeds a prompt's content words with MiniLM's input table and aligns two prompts."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from tokenizers import Tokenizer

        from router_models.encoder import bundled_model_dir
        from router_models.static import load_table, sif_weights

        model = model_dir or bundled_model_dir()
        self._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._table = load_table("input", model, model)  # the cache dir is unused for "input"
        self._sif = sif_weights(len(self._table))
        self.words = functools.lru_cache(maxsize=4096)(self._words)

    def _words(self, text: str) -> _Words:
        """Content words (not function words, not numbers: the hard guards own those), each the mean of
        its word-pieces (which are contiguous: one gather and one reduceat for the whole prompt)."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        pieces: list[int] = []
        starts: list[int] = []
        word_ids, offsets, ids = encoding.word_ids, encoding.offsets, encoding.ids
        for index, word in enumerate(word_ids):
            if word is None or (index > 0 and word_ids[index - 1] == word):
                continue
            end = index + 1
            while end < len(word_ids) and word_ids[end] == word:
                end += 1
            token = text[offsets[index][0] : offsets[end - 1][1]].lower()
            if token.isalpha() and token not in guards.FUNCTION_WORDS:
                starts.append(len(pieces))
                pieces.extend(ids[index:end])
        if not starts:
            return _Words(np.zeros((0, self._table.shape[1]), np.float32), np.zeros(0, np.float32))
        vectors = np.add.reduceat(self._table[pieces], starts, axis=0)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return _Words(vectors, np.maximum.reduceat(self._sif[pieces], starts))

    def align(self, query: str, cached: str) -> Alignment:
        a, b = self.words(query), self.words(cached)
        if len(a.weights) == 0 or len(b.weights) == 0:
            same = float(len(a.weights) == len(b.weights))  # both empty: nothing differs
            return Alignment(same, same, float(len(a.weights) + len(b.weights)),
                             float(a.weights.sum() + b.weights.sum()))
        similarity = a.vectors @ b.vectors.T
        best = np.concatenate([similarity.max(axis=1), similarity.max(axis=0)])
        weights = np.concatenate([a.weights, b.weights])
        unmatched = best < MATCHED
        return Alignment(float(best.min()), float(best.mean()), float(unmatched.sum()),
                         float(weights[unmatched].sum()))


@functools.cache
def shared_aligner() -> Aligner:
    """One table per process (47 MB, read from the model's safetensors on first use)."""
    return Aligner()
