"""Encoders by name, so a trained head records which embedding it was trained on and gets it back.

Names: `all-MiniLM-L6-v2-seq<N>` (the transformer, truncated at N word-pieces; seq256 is the gateway's
shared encoder, whose vectors the semantic cache uses too), `all-MiniLM-L6-v2-static-<table>`
(router_models/static.py; with `-tail<N>` the last N word-pieces get a vector of their own), and `A+B`:
the two vectors side by side. A head serves with the encoder it was trained on, never a look-alike.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from .embedding_cache import Embeds
from .encoder import DEFAULT_MAX_SEQ_LENGTH

SHARED_ENCODER_NAME = f"all-MiniLM-L6-v2-seq{DEFAULT_MAX_SEQ_LENGTH}"
_TRANSFORMER = re.compile(r"all-MiniLM-L6-v2-seq(\d+)")
_STATIC = re.compile(r"all-MiniLM-L6-v2-static-([\w-]+?)(?:-tail(\d+))?")


class ConcatEncoder:
    """Several encoders' vectors concatenated (each part stays L2-normalised on its own)."""

    def __init__(self, parts: Sequence[Embeds]) -> None:
        self.parts = list(parts)
        self.name = "+".join(part.name for part in self.parts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.concatenate([part.embed(texts) for part in self.parts], axis=1)


def make_encoder(name: str) -> Embeds:
    """A new encoder for `name` (ValueError for a name no encoder has)."""
    if "+" in name:
        return ConcatEncoder([encoder_named(part) for part in name.split("+")])
    if match := _TRANSFORMER.fullmatch(name):
        from .encoder import Encoder

        return Encoder(max_seq_length=int(match.group(1)))
    if match := _STATIC.fullmatch(name):
        from .static import StaticEncoder, as_table

        return StaticEncoder(as_table(match.group(1)), tail=int(match.group(2) or 0))
    raise ValueError(f"unknown encoder {name!r}: expected all-MiniLM-L6-v2-seq<N> or all-MiniLM-L6-v2-static-<table>")


@functools.cache
def encoder_named(name: str) -> Embeds:
    """One process-wide encoder per name, created on first use."""
    if name == SHARED_ENCODER_NAME:
        from .encoder import shared_encoder

        return shared_encoder()
    return make_encoder(name)
