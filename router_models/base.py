"""The Router seam: score prompts by the probability that the strong (large) model is needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Router(Protocol):
    """`score` returns one value in [0, 1] per prompt; higher means "send to the large model".

    `embeddings`, when given, are the prompts' all-MiniLM-L6-v2 embeddings (L2-normalised, shape
    (n, 384)) already computed by the gateway, so a router never embeds a prompt twice.
    """

    name: str
    needs_embeddings: bool

    def score(self, prompts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray: ...
