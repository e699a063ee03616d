"""Routing metrics, calibration and baselines on small hand-checkable data (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from router_models.baselines import PromptLengthRouter, RandomRouter
from router_models.calibrate import routes_to_strong, threshold_for_strong_fraction
from router_models.evaluate import pgr_curve, routing_metrics

# 10 prompts: 4 where only the strong model is right, 1 where only the weak one is, 5 ties.
WEAK = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0], dtype=float)
STRONG = np.array([1, 1, 1, 1, 0, 1, 1, 0, 1, 0], dtype=float)
GAIN = STRONG - WEAK


def test_oracle_router_recovers_the_gap_early() -> None:
    metrics = routing_metrics(GAIN, WEAK, STRONG)
    # Net gain 3 over 10 prompts: the oracle routes 4 gainers first (PGR 4/3 at c = 0.4), then
    # five zero-gain prompts, then the loser (PGR 1 at c = 1).
    assert metrics.cpt50 == pytest.approx(0.15)  # PGR(c) = (c·10)/3 on the first segment
    assert metrics.cpt80 == pytest.approx(0.24)
    assert metrics.apgr > 1.0


def test_reversed_router_is_worse_than_random() -> None:
    assert routing_metrics(-GAIN, WEAK, STRONG).apgr < 0.5 < routing_metrics(GAIN, WEAK, STRONG).apgr


def test_constant_scores_are_exactly_random() -> None:
    # A tie across all prompts is resolved by expectation, not by index order.
    assert routing_metrics(np.zeros(10), WEAK, STRONG).apgr == pytest.approx(0.5)


def test_apgr_is_the_exact_integral_of_the_curve() -> None:
    scores = np.random.default_rng(0).random(WEAK.size)
    curve = pgr_curve(scores, WEAK, STRONG)
    grid = np.linspace(0, 1, 100_001)
    assert curve.apgr == pytest.approx(np.trapezoid(curve.at(grid), grid), abs=1e-6)
    assert curve.at(0.0) == 0.0 and curve.at(1.0) == pytest.approx(1.0)


def test_pgr_needs_a_better_strong_model() -> None:
    with pytest.raises(ValueError, match="not better"):
        routing_metrics(np.arange(3.0), np.ones(3), np.zeros(3))


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_calibration_sends_the_requested_fraction(fraction: float) -> None:
    scores = np.random.default_rng(1).random(1000)
    calibration = threshold_for_strong_fraction(scores, fraction)
    assert calibration.achieved_fraction == pytest.approx(fraction, abs=1e-3)
    assert routes_to_strong(scores, calibration.threshold).mean() == pytest.approx(fraction, abs=1e-3)


def test_calibration_with_ties_reports_what_it_achieves() -> None:
    calibration = threshold_for_strong_fraction(np.array([0.9, 0.5, 0.5, 0.5, 0.1]), 0.4)
    assert calibration.achieved_fraction == pytest.approx(0.8)  # the tied block goes together


def test_calibration_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold_for_strong_fraction(np.ones(3), 1.5)


@pytest.mark.parametrize("router", [RandomRouter(seed=3), PromptLengthRouter()])
def test_baselines_score_in_unit_interval_and_deterministically(router) -> None:
    prompts = ["hi", "What is 2+2?", "x" * 5000, ""]
    scores = router.score(prompts)
    assert scores.shape == (4,) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(scores, router.score(prompts))
    np.testing.assert_array_equal(scores[1:3], router.score(prompts[1:3]))  # independent of the batch


def test_random_router_depends_on_seed_and_is_roughly_uniform() -> None:
    prompts = [f"prompt {i}" for i in range(2000)]
    a, b = RandomRouter(seed=0).score(prompts), RandomRouter(seed=1).score(prompts)
    assert not np.allclose(a, b)
    assert abs(a.mean() - 0.5) < 0.03


def test_length_router_prefers_longer_prompts() -> None:
    short, long = PromptLengthRouter().score(["Hi there", "Explain " * 200])
    assert long > short
