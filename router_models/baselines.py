"""Reference routers that every learned router must beat."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


class RandomRouter:
    """Scores are uniform in [0, 1), derived from a hash of (seed, prompt).

    Hashing rather than drawing from a generator keeps the score of a prompt the same whatever batch
    it arrives in, so the gateway's routing is reproducible; in expectation this router's APGR is 0.5.
    """

    needs_embeddings = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.name = f"random(seed={seed})"

    def score(self, prompts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        salt = self.seed.to_bytes(8, "little", signed=True)
        digests = (hashlib.blake2b(p.encode("utf-8"), digest_size=8, key=salt).digest() for p in prompts)
        return np.fromiter((int.from_bytes(d, "little") / 2.0**64 for d in digests), dtype=np.float64,
                           count=len(prompts))

    def threshold_for_fraction(self, strong_fraction: float) -> float:
        """Scores are uniform, so the threshold is exact without a prompt sample."""
        return 1.0 - strong_fraction


class PromptLengthRouter:
    """Longer prompts go to the large model: score = chars / (chars + midpoint_chars).

    Length is a surprisingly strong difficulty proxy (long contexts, multi-part questions), and
    the midpoint only sets where 0.5 falls; ranking, and so APGR, does not depend on it.
    """

    name = "length"
    needs_embeddings = False

    def __init__(self, midpoint_chars: float = 500.0) -> None:
        self.midpoint_chars = midpoint_chars

    def score(self, prompts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        lengths = np.fromiter((len(p) for p in prompts), dtype=np.float64, count=len(prompts))
        return lengths / (lengths + self.midpoint_chars)
