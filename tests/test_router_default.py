"""The shipped routers: load from the committed weights alone and behave like Routers."""

from __future__ import annotations

import numpy as np
import pytest

from router_models import DEFAULT_WEIGHTS, EMBEDDING_WEIGHTS, load_router
from router_models.encoder import Encoder
from router_models.head import Head, LearnedRouter

PROMPTS = [
    "hi",
    "What is the capital of Australia?",
    "Prove that the square root of 2 is irrational, then generalise the argument to any non-square integer.",
    "Write a Python function that merges overlapping intervals and analyse its time complexity.",
    "A lesion causing compression of the facial nerve at the stylomastoid foramen will cause ipsilateral\n"
    "A. paralysis of the facial muscles.\nB. loss of taste.\nC. lacrimation.\nD. less saliva.\nAnswer:",
]


@pytest.fixture(scope="module")
def router() -> LearnedRouter:
    loaded = load_router("default")
    assert isinstance(loaded, LearnedRouter)
    return loaded


@pytest.mark.parametrize("weights", [DEFAULT_WEIGHTS, EMBEDDING_WEIGHTS])
def test_weights_are_small_and_plain_arrays(weights) -> None:
    assert weights.stat().st_size < 2_000_000
    with np.load(weights, allow_pickle=False) as stored:  # no pickled objects inside
        assert "meta" in stored.files


def test_default_is_the_static_router_and_needs_no_gateway_embedding(router: LearnedRouter) -> None:
    assert router.name == "static" and not router.needs_embeddings
    other = load_router("static")
    np.testing.assert_array_equal(other.head.weights[0], router.head.weights[0])  # type: ignore[attr-defined]


def test_embedding_router_takes_the_gateways_embedding_and_adds_the_static_one() -> None:
    router = load_router("embedding")
    assert isinstance(router, LearnedRouter) and router.needs_embeddings
    embeddings = Encoder(num_threads=1).embed(PROMPTS)
    np.testing.assert_allclose(router.score(PROMPTS, embeddings), router.score(PROMPTS), atol=1e-5)


def test_scores_are_in_unit_interval_and_deterministic(router: LearnedRouter) -> None:
    scores = router.score(PROMPTS)
    assert scores.shape == (len(PROMPTS),) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(scores, router.score(PROMPTS))


def test_given_embeddings_give_the_same_scores(router: LearnedRouter) -> None:
    embeddings = Encoder(num_threads=1).embed(PROMPTS)
    np.testing.assert_allclose(router.score(PROMPTS, embeddings), router.score(PROMPTS), atol=1e-5)
    one_by_one = np.concatenate([router.score([p], embeddings[i : i + 1]) for i, p in enumerate(PROMPTS)])
    np.testing.assert_allclose(one_by_one, router.score(PROMPTS, embeddings), atol=1e-6)


def test_builtin_calibration_is_monotone(router: LearnedRouter) -> None:
    thresholds = [router.threshold_for_fraction(f) for f in (0.0, 0.2, 0.5, 0.8, 1.0)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert 0.0 <= thresholds[-1] <= thresholds[0] <= 1.0


def test_weights_round_trip(router: LearnedRouter, tmp_path) -> None:
    copy = Head.load(router.head.save(tmp_path / "copy.npz"))
    width = router.head.weights[0].shape[1] - len(router.head.feature_names)  # the encoder's vector size
    embeddings = np.random.default_rng(0).normal(size=(len(PROMPTS), width)).astype(np.float32)
    expected = router.head.score(PROMPTS, embeddings)
    np.testing.assert_allclose(copy.score(PROMPTS, embeddings), expected, atol=1e-7)


def test_unknown_weights_file_is_rejected(tmp_path) -> None:
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, meta=np.array('{"format": "something-else"}'))
    with pytest.raises(ValueError, match="not a turnout-router-head"):
        load_router(str(bogus))
