"""Rule-made one-word swaps of tuning prompts, as extra training contrasts (train_verifier.py --swap).

Most false hits left in bench/cache/RESULTS.md (2026-11-30, night) are one content word swapped for a
related one in an otherwise identical prompt (cook rice in a microwave / on the stove, generate / install a
requirements file, repot / rebloom an orchid). The tuning set has such contrasts, but few with a verb or a
setting swapped. Here each paraphrase a-side gets one content word replaced by the most similar word of the
tuning set's own vocabulary (MiniLM's static input table) that is not a synonym: close enough to be the
same kind of word (appliance for appliance, verb for verb), far enough to ask something else.
"""

from __future__ import annotations

import re

import numpy as np

from gateway.cache.matching import guards
from gateway.cache.matching.alignment import Aligner

SYNONYM = 0.5
"""Static-table cosine at and above which a replacement could be a synonym (alignment.MATCHED: synonyms
and inflections mostly 0.5-0.8): never used."""
_WORD = re.compile(r"\b[a-z]{3,}\b")  # lower-case words only: names are the entity guard's


def vocabulary(texts: list[str]) -> list[str]:
    """The content words of `texts`, as candidate replacements."""
    return sorted({word for text in texts for word in _WORD.findall(text) if word not in guards.FUNCTION_WORDS})


class Swapper:
    """Replaces the index-th content word of a prompt by its nearest non-synonym in a vocabulary."""

    def __init__(self, aligner: Aligner, words: list[str]) -> None:
        self._aligner = aligner
        vectors = [aligner.words(word).vectors for word in words]
        self._words = [word for word, v in zip(words, vectors, strict=True) if len(v) == 1]
        self._table = np.stack([v[0] for v in vectors if len(v) == 1])

    def replacement(self, word: str) -> str | None:
        """The closest vocabulary word below SYNONYM that is not an inflection or a derivation of the same
        word (the same first four letters: differ/difference) nor its opposite."""
        vector = self._aligner.words(word).vectors
        if len(vector) != 1:
            return None
        similarity = self._table @ vector[0]
        for j in np.argsort(-similarity):
            other = self._words[j]
            if similarity[j] < SYNONYM and other[:4] != word[:4] and guards.antonym_mismatch(word, other) is None:
                return other
        return None

    def swapped(self, text: str, index: int) -> str | None:
        """`text` with its (index mod n)-th content word replaced; None if it has none to replace."""
        matches = [m for m in _WORD.finditer(text) if m.group(0) not in guards.FUNCTION_WORDS]
        for offset in range(len(matches)):
            match = matches[(index + offset) % len(matches)]
            if (other := self.replacement(match.group(0))) is not None:
                return f"{text[:match.start()]}{other}{text[match.end():]}"
        return None
