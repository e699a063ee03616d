"""Disk cache of prompt embeddings for training and evaluation.

Embedding 14k MMLU prompts takes minutes on 2 cores; cross-validating many heads must not redo it.
Entries are keyed by the SHA-1 of the prompt text and stored per encoder name, as plain arrays in
an .npz (no pickle), in `<cache_dir>/embeddings/` ($TURNOUT_HOME by default, like the models).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .derived import cache_root


class Embeds(Protocol):
    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


_KEY_BYTES = 20  # stored as a (n, 20) uint8 array: numpy "S" strings would drop trailing zero bytes


def prompt_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


def cached_embed(encoder: Embeds, prompts: Sequence[str], cache_dir: str | Path | None = None,
                 show_progress: bool = False) -> np.ndarray:
    """Embeddings of `prompts`, computing (and storing) only those not cached yet."""
    file = cache_root(cache_dir) / "embeddings" / f"{encoder.name}.npz"
    known: dict[bytes, np.ndarray] = {}
    if file.exists():
        with np.load(file, allow_pickle=False) as stored:
            known = dict(zip((k.tobytes() for k in stored["keys"]), stored["vectors"], strict=True))
    keys = [prompt_key(p) for p in prompts]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in known}.values())
    if missing:
        vectors = _embed_in_chunks(encoder, [prompts[i] for i in missing], show_progress)
        known.update(zip((keys[i] for i in missing), vectors, strict=True))
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npz")
        keys_array = np.frombuffer(b"".join(known), dtype=np.uint8).reshape(len(known), _KEY_BYTES)
        np.savez(tmp, keys=keys_array, vectors=np.stack(list(known.values())))
        tmp.replace(file)
    return np.stack([known[k] for k in keys]).astype(np.float32)


def _embed_in_chunks(encoder: Embeds, texts: list[str], show_progress: bool, chunk: int = 512) -> np.ndarray:
    from tqdm import tqdm

    parts = []
    with tqdm(total=len(texts), desc="embedding", unit="prompt", disable=not show_progress) as bar:
        for start in range(0, len(texts), chunk):
            parts.append(encoder.embed(texts[start : start + chunk]))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)
