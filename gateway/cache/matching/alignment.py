"""Word-level alignment of two prompts, for the semantic-hit verifier (verifier.py).

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

from gateway.cache.matching import guards

MATCHED = 0.5
"""Cosine in the input table above which two words count as matched (same word = 1; inflections,
synonyms and close terms mostly 0.5-0.8; unrelated words below 0.3)."""


@dataclass(frozen=True)
class Alignment:
    """How well the words of two prompts match each other."""

    worst: float  # the least-matched word of either side: its best cosine on the other side
    mean: float  # mean best cosine over both sides' words
    unmatched: float  # words of either side below the match threshold
    unmatched_weight: float  # their SIF weights summed (rare words ~1, frequent ones ~0)
    weighted_mean: float  # SIF-weighted mean best cosine, the lower of the two sides' (BERTScore-like)

    def scores(self) -> tuple[float, float, float, float]:
        """The four scores the aligned verifier was fitted on (weighted_mean came later, with the
        contextual one)."""
        return self.worst, self.mean, self.unmatched, self.unmatched_weight


@dataclass(frozen=True)
class Words:
    """The words of one prompt: L2-normalised vectors (n, dim), each word's SIF weight (its rarest piece),
    and whether it is a content word (not in guards.FUNCTION_WORDS)."""

    vectors: np.ndarray
    weights: np.ndarray
    content: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> Words:
        return cls(np.zeros((0, dim), np.float32), np.zeros(0, np.float32), np.zeros(0, bool))

    @classmethod
    def pool(cls, piece_vectors: np.ndarray, piece_weights: np.ndarray, starts: list[int],
             content: list[bool]) -> Words:
        """Each word the mean of its (contiguous) pieces: one reduceat for the whole prompt."""
        vectors = np.add.reduceat(piece_vectors, starts, axis=0)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return cls(vectors, np.maximum.reduceat(piece_weights, starts), np.asarray(content, bool))


def word_pieces(text: str, word_ids: list[int | None], offsets: list[tuple[int, int]],
                content_only: bool = True) -> tuple[list[int], list[int], list[bool]]:
    """Positions (into the encoding) of the pieces of each kept word, where each word starts in that
    list, and whether it is a content word. Kept: alphabetic words; with `content_only`, not function
    words either. Numbers are never kept (the hard guards own those)."""
    positions: list[int] = []
    starts: list[int] = []
    content: list[bool] = []
    for index, word in enumerate(word_ids):
        if word is None or (index > 0 and word_ids[index - 1] == word):
            continue
        end = index + 1
        while end < len(word_ids) and word_ids[end] == word:
            end += 1
        token = text[offsets[index][0] : offsets[end - 1][1]].lower()
        function_word = token in guards.FUNCTION_WORDS
        if token.isalpha() and not (content_only and function_word):
            starts.append(len(positions))
            positions.extend(range(index, end))
            content.append(not function_word)
    return positions, starts, content


def align_words(a: Words, b: Words, matched: float) -> Alignment:
    """Match each word of either side to its most similar word of the other (cosine). Every word takes
    part in the matching and the means; only content words count for `worst` and the unmatched scores,
    so that a reworded function word ("How can I" / "How do I") is not a mismatch. (The static aligner
    keeps only content words, so there all of them count.)"""
    if len(a.weights) == 0 or len(b.weights) == 0:
        same = float(len(a.weights) == len(b.weights))  # both empty: nothing differs
        counted = np.concatenate([a.content, b.content])
        return Alignment(same, same, float(counted.sum()),
                         float(np.concatenate([a.weights, b.weights])[counted].sum()), same)
    similarity = a.vectors @ b.vectors.T
    best_a, best_b = similarity.max(axis=1), similarity.max(axis=0)
    best = np.concatenate([best_a, best_b])
    weights = np.concatenate([a.weights, b.weights])
    counted = np.concatenate([a.content, b.content])
    unmatched = (best < matched) & counted
    weighted = min(float(best_a @ a.weights) / max(float(a.weights.sum()), 1e-12),
                   float(best_b @ b.weights) / max(float(b.weights.sum()), 1e-12))
    worst = float(best[counted].min()) if counted.any() else 1.0
    return Alignment(worst, float(best.mean()), float(unmatched.sum()),
                     float(weights[unmatched].sum()), weighted)


def one_sided(a: Words, b: Words, matched: float) -> tuple[float, float, float, float]:
    """Content words below `matched`, per side: the larger and the smaller side's SIF weight, then the
    larger and the smaller side's count. An added qualifier ("repot a *large* cactus") leaves words
    unmatched on one side only; a one-word swap ("stove"/"microwave") on both; the two-sided sums of
    `align_words` cannot tell these apart."""
    if len(a.weights) == 0 or len(b.weights) == 0:
        return 0.0, 0.0, 0.0, 0.0
    similarity = a.vectors @ b.vectors.T
    unmatched_a = (similarity.max(axis=1) < matched) & a.content
    unmatched_b = (similarity.max(axis=0) < matched) & b.content
    weights = sorted((float(a.weights[unmatched_a].sum()), float(b.weights[unmatched_b].sum())))
    counts = sorted((float(unmatched_a.sum()), float(unmatched_b.sum())))
    return weights[1], weights[0], counts[1], counts[0]


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

    def _words(self, text: str) -> Words:
        """Content words (not function words, not numbers), each the mean of its word-pieces' input vectors."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        positions, starts, content = word_pieces(text, encoding.word_ids, encoding.offsets)
        if not starts:
            return Words.empty(self._table.shape[1])
        pieces = np.asarray(encoding.ids)[positions]
        return Words.pool(self._table[pieces], self._sif[pieces], starts, content)

    def align(self, query: str, cached: str) -> Alignment:
        return align_words(self.words(query), self.words(cached), MATCHED)


@functools.cache
def shared_aligner() -> Aligner:
    """One table per process (47 MB, read from the model's safetensors on first use)."""
    return Aligner()
