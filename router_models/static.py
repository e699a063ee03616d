"""Static MiniLM embeddings: one precomputed vector per word-piece, averaged over a prompt's tokens.

The transformer costs ~21 MFLOP per token, so on 2 CPU cores a 100-token prompt takes ~15 ms and
1000 prompts/s is out of reach (bench/router/RESULTS.md). A router mostly needs the prompt's topic,
which a bag of word-pieces carries, so this encoder replaces the transformer by a table lookup:
tokenise (Rust), gather rows, average, normalise: 0.07 ms per chat prompt, 0.23 ms per MMLU prompt,
no torch or onnxruntime.

Two tables, both derived locally from the all-MiniLM-L6-v2 files (no download):
- "input": MiniLM's own input word-embedding matrix, read from model.safetensors (no computation).
- "distilled": each word-piece run through the full transformer on its own ([CLS] piece [SEP],
  mean-pooled), as model2vec does; computed once (~2 min) and cached under $TURNOUT_HOME/static.

"-sif" variants weight each token by a / (a + p(token)) (Arora et al.'s smooth inverse frequency),
so "the", "of" and the answer letters stop drowning the topic words. p comes from word-piece counts
over generic chat prompts (ShareGPT first turns; weights/token_counts.npz, built by
bench/router/token_counts.py), never from the routing data.

A "-tail<N>" suffix (e.g. `input-sif-tail32`) splits the prompt: one vector for its last N word-pieces
and one for everything before, side by side (768-d). A prompt's end (the actual question, the answer
options) and its context (a passage, a scenario) then get their own weights in the head, instead of a
long context drowning the end in one average (bench/router/RESULTS.md, section 4).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from .derived import cache_root, weights_digest
from .encoder import EMBEDDING_DIM, bundled_model_dir

Table = Literal["input", "distilled", "input-sif", "distilled-sif"]
TABLES: tuple[Table, ...] = ("input", "distilled", "input-sif", "distilled-sif")
Vectors = Literal["input", "distilled"]  # the per-token vectors a table averages ("-sif" adds weights to them)
SIF_A = 3e-3  # best of 1e-4 / 1e-3 / 3e-3 / 1e-2 in subject-held-out CV (bench/router/RESULTS.md)
TOKEN_COUNTS = Path(__file__).parent / "weights" / "token_counts.npz"
MAX_TOKENS = 2048  # bounds the cost of huge prompts; averaging makes later tokens matter little anyway
NAME_PREFIX = "all-MiniLM-L6-v2-static-"


def as_table(name: str) -> Table:
    """`name` as one of the TABLES; ValueError naming them for anything else."""
    for table in TABLES:
        if name == table:
            return table
    raise ValueError(f"unknown static table {name!r}; expected one of {TABLES}")


class StaticEncoder:
    """Embeds texts into (n, 384) float32 L2-normalised averages of per-token vectors ((n, 768) with a tail)."""

    def __init__(self, table: Table = "distilled", model_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, tail: int = 0) -> None:
        from tokenizers import Tokenizer

        table = as_table(table)  # callers from outside the type checker may pass any string
        if tail < 0:
            raise ValueError(f"tail must be >= 0 word-pieces, got {tail}")
        model = Path(model_dir) if model_dir else bundled_model_dir()
        self.table = table
        self.tail = tail  # > 0: [vector of all but the last `tail` pieces, vector of the last `tail` pieces]
        self.dim = EMBEDDING_DIM * (2 if tail else 1)
        self._vectors = load_table("input" if table.startswith("input") else "distilled", model, cache_root(cache_dir))
        self._weights = sif_weights(len(self._vectors)) if table.endswith("-sif") else None
        self._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        special = {self._tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
        self._special = np.array(sorted(i for i in special if i is not None), dtype=np.int64)

    @property
    def name(self) -> str:
        return NAME_PREFIX + self.table + (f"-tail{self.tail}" if self.tail else "")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            if self.tail:
                split = max(len(encoding.ids) - self.tail, 0)
                self._pool(encoding.ids[:split][:MAX_TOKENS], out[row, :EMBEDDING_DIM])
                self._pool(encoding.ids[split:], out[row, EMBEDDING_DIM:])
            else:
                self._pool(encoding.ids[:MAX_TOKENS], out[row])
        parts = out.reshape(len(texts), -1, EMBEDDING_DIM)  # a view: each part is normalised on its own
        parts /= np.maximum(np.linalg.norm(parts, axis=2, keepdims=True), 1e-12)
        return out

    def _pool(self, token_ids: Sequence[int], into: np.ndarray) -> None:
        """Write the (unnormalised) average of these pieces' vectors into `into`; nothing for no pieces."""
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.size == 0:
            return
        if self._weights is None:
            into[:] = self._vectors[ids].mean(axis=0)
        else:  # normalised afterwards, so a weighted sum is as good as a weighted mean
            into[:] = self._weights[ids] @ self._vectors[ids]


def sif_weights(vocab_size: int, a: float = SIF_A, counts_file: Path = TOKEN_COUNTS) -> np.ndarray:
    """a / (a + p(token)), with add-one smoothed word-piece probabilities from `counts_file`."""
    with np.load(counts_file, allow_pickle=False) as stored:
        counts: np.ndarray = stored["counts"].astype(np.float64)
    if counts.shape != (vocab_size,):
        raise ValueError(f"{counts_file}: {counts.shape[0]} token counts for a {vocab_size}-piece vocabulary")
    probability = (counts + 1.0) / (counts.sum() + vocab_size)
    weights: np.ndarray = (a / (a + probability)).astype(np.float32)
    return weights


def count_tokens(texts: Sequence[str], model_dir: Path | None = None) -> np.ndarray:
    """How often each word-piece occurs in `texts` (no special tokens): the input of `sif_weights`."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str((model_dir or bundled_model_dir()) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    counts = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        np.add.at(counts, np.asarray(encoding.ids, dtype=np.int64), 1)
    return counts


def load_table(table: Vectors, model_dir: Path, cache_dir: Path) -> np.ndarray:
    """The (vocab, 384) float32 table, computed and cached on first use for "distilled"."""
    if table == "input":
        from safetensors.numpy import load_file

        return load_file(str(model_dir / "model.safetensors"))["embeddings.word_embeddings.weight"]
    path = cache_dir / "static" / f"minilm-distilled-{weights_digest(model_dir)}.npy"
    if not path.exists():
        vectors = distill_table(model_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial.npy")
        np.save(partial, vectors)
        partial.replace(path)  # atomic: a concurrent start never reads half a file
    table_vectors: np.ndarray = np.load(path, allow_pickle=False)  # one .npy file: an array
    return table_vectors


def distill_table(model_dir: Path, batch: int = 512) -> np.ndarray:
    """Each vocabulary entry's sentence embedding when it is the whole input ([CLS] piece [SEP])."""
    from tokenizers import Tokenizer

    from .encoder import Encoder

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    cls, sep, size = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"), tokenizer.get_vocab_size()
    if cls is None or sep is None:
        raise ValueError(f"{model_dir}: the tokenizer has no [CLS] or no [SEP] piece")
    encoder = Encoder(model_dir)
    out = np.empty((size, EMBEDDING_DIM), dtype=np.float32)
    for start in range(0, size, batch):
        out[start : start + batch] = encoder.embed_ids([[cls, i, sep] for i in range(start, min(start + batch, size))])
    return out
