"""Static (table-lookup) MiniLM encoder, encoders by name, and heads that serve with their own encoder."""

from __future__ import annotations

import numpy as np
import pytest

from router_models.encoder import EMBEDDING_DIM
from router_models.encoders import SHARED_ENCODER_NAME, make_encoder
from router_models.head import Head, LearnedRouter
from router_models.static import StaticEncoder

PROMPTS = ["How do I reverse a list in Python?", "How can I reverse a Python list?",
           "What is the capital of France?", "", "word " * 5000]


@pytest.fixture(scope="module")
def static() -> StaticEncoder:
    return StaticEncoder("input")


def test_static_vectors_are_unit_float32_and_batch_independent(static: StaticEncoder) -> None:
    vectors = static.embed(PROMPTS)
    assert vectors.shape == (len(PROMPTS), EMBEDDING_DIM) and vectors.dtype == np.float32
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 2, 4]], 1.0, atol=1e-5)
    assert norms[3] == 0.0  # nothing to average: a zero vector, not NaN
    one_by_one = np.concatenate([static.embed([p]) for p in PROMPTS])
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-6)


def test_static_vectors_keep_topic(static: StaticEncoder) -> None:
    a, b, c = static.embed(PROMPTS[:3])
    assert a @ b > a @ c


def test_encoder_names_round_trip() -> None:
    assert make_encoder("all-MiniLM-L6-v2-static-input").name == "all-MiniLM-L6-v2-static-input"
    assert make_encoder("all-MiniLM-L6-v2-seq32").name == "all-MiniLM-L6-v2-seq32"
    assert make_encoder("all-MiniLM-L6-v2-static-input-sif-tail32").name == "all-MiniLM-L6-v2-static-input-sif-tail32"
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("bert-base")
    with pytest.raises(ValueError, match="unknown static table"):
        make_encoder("all-MiniLM-L6-v2-static-nope")


def _head(encoder: str | None) -> Head:
    rng = np.random.default_rng(0)
    meta = {} if encoder is None else {"encoder": encoder}
    return Head([rng.normal(size=(2, EMBEDDING_DIM)).astype(np.float32)], [np.zeros(2, np.float32)], "gain2", True,
                (), np.zeros(0, np.float32), np.ones(0, np.float32), meta)


def test_head_on_another_encoder_ignores_the_gateways_embedding(static: StaticEncoder) -> None:
    router = LearnedRouter(_head("all-MiniLM-L6-v2-static-input"), embed=static.embed)
    assert not router.needs_embeddings  # the gateway need not embed for this router
    unrelated = np.ones((len(PROMPTS), EMBEDDING_DIM), np.float32)
    np.testing.assert_allclose(router.score(PROMPTS, unrelated), router.head.score(PROMPTS, static.embed(PROMPTS)))


def test_head_without_encoder_meta_uses_the_shared_encoder() -> None:
    router = LearnedRouter(_head(None))
    assert router.encoder_name == SHARED_ENCODER_NAME and router.needs_embeddings


def test_sif_weights_favour_rare_pieces() -> None:
    sif = StaticEncoder("input-sif")
    weights = sif._weights
    assert weights is not None
    the, photo = sif._tokenizer.token_to_id("the"), sif._tokenizer.token_to_id("photo")
    assert weights[the] < weights[photo] <= 1.0
    np.testing.assert_allclose(np.linalg.norm(sif.embed(PROMPTS[:3]), axis=1), 1.0, atol=1e-5)


def test_tail_split_gives_the_prompts_end_its_own_vector() -> None:
    plain, split = StaticEncoder("input-sif"), StaticEncoder("input-sif", tail=4)
    assert split.name == "all-MiniLM-L6-v2-static-input-sif-tail4" and split.dim == 2 * EMBEDDING_DIM
    short, long = "What is gravity?", "Read this long passage about the history of Rome. Which emperor came first?"
    vectors = split.embed([short, long, ""])
    assert vectors.shape == (3, 2 * EMBEDDING_DIM)
    head, tail = vectors[:, :EMBEDDING_DIM], vectors[:, EMBEDDING_DIM:]
    assert not head[0].any() and not vectors[2].any()  # nothing before the last 4 pieces / nothing at all
    np.testing.assert_allclose(tail[0], plain.embed([short])[0], atol=1e-6)  # a short prompt is all tail
    ids = split._tokenizer.encode(long, add_special_tokens=False).ids
    first, last = (split._tokenizer.decode(part) for part in (ids[:-4], ids[-4:]))
    np.testing.assert_allclose(head[1], plain.embed([first])[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(tail[1]), 1.0, atol=1e-5)
    assert "emperor" not in first and tail[1] @ plain.embed([last])[0] > 0.99


def test_concatenated_head_adds_its_own_part_to_the_gateways_embedding(static: StaticEncoder) -> None:
    shared = np.random.default_rng(1).normal(size=(3, EMBEDDING_DIM)).astype(np.float32)
    head = Head([np.random.default_rng(2).normal(size=(2, 2 * EMBEDDING_DIM)).astype(np.float32)],
                [np.zeros(2, np.float32)], "gain2", True, (), np.zeros(0, np.float32), np.ones(0, np.float32),
                {"encoder": f"{SHARED_ENCODER_NAME}+all-MiniLM-L6-v2-static-input"})
    router = LearnedRouter(head)
    assert router.needs_embeddings
    expected = head.score(PROMPTS[:3], np.concatenate([shared, static.embed(PROMPTS[:3])], axis=1))
    np.testing.assert_allclose(router.score(PROMPTS[:3], shared), expected, atol=1e-6)
