"""Routing quality metrics from RouteLLM (arXiv:2406.18665): PGR curve, APGR, CPT.

Route the top fraction c of prompts (by router score, descending) to the strong model:
q(c) = mean quality of that mixed assignment, PGR(c) = (q(c) - q_weak) / (q_strong - q_weak).

How fractions and ties are handled (exactly, no sampling): routing c·n prompts where c·n is not a
whole number, or where the cut-off falls inside a block of tied scores, gets the *expected* quality
of choosing uniformly at random among the prompts at the boundary. The cumulative gain is then
piecewise linear in c with knots at the ends of tied blocks, so APGR is its exact integral (the
limit of an infinitely fine grid) and CPT(x) is found by linear interpolation on it. Consequently a
router whose scores are all equal scores exactly the random router's expectation, APGR = 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PGRCurve:
    fractions: np.ndarray  # knots of the piecewise-linear curve, from 0 to 1
    pgr: np.ndarray

    def at(self, fraction: float | np.ndarray) -> np.ndarray:
        pgr: np.ndarray = np.interp(fraction, self.fractions, self.pgr)
        return pgr

    @property
    def apgr(self) -> float:
        return float(np.trapezoid(self.pgr, self.fractions))

    def cpt(self, target: float) -> float:
        """Smallest strong-call fraction whose PGR reaches `target` (nan if never)."""
        reached = np.flatnonzero(self.pgr >= target)
        if reached.size == 0:
            return float("nan")
        i = reached[0]
        if i == 0:
            return 0.0
        x0, x1, y0, y1 = self.fractions[i - 1], self.fractions[i], self.pgr[i - 1], self.pgr[i]
        return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


@dataclass(frozen=True)
class RoutingMetrics:
    apgr: float
    cpt50: float
    cpt80: float

    def as_dict(self) -> dict[str, float]:
        return {"apgr": self.apgr, "cpt50": self.cpt50, "cpt80": self.cpt80}


def pgr_curve(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> PGRCurve:
    scores, weak, strong = (np.asarray(a, dtype=np.float64) for a in (scores, weak, strong))
    if not (scores.shape == weak.shape == strong.shape) or scores.ndim != 1 or scores.size == 0:
        raise ValueError("scores, weak and strong must be non-empty 1-D arrays of equal length")
    spread = strong.mean() - weak.mean()
    if spread <= 0:
        raise ValueError("PGR is undefined: the strong model is not better than the weak one on this data")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    gain = (strong - weak)[order]
    block_ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True)) + 1
    cumulative_gain = np.concatenate([[0.0], np.cumsum(gain)[block_ends - 1]])
    fractions = np.concatenate([[0.0], block_ends / scores.size])
    return PGRCurve(fractions, cumulative_gain / scores.size / spread)


def routing_metrics(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> RoutingMetrics:
    curve = pgr_curve(scores, weak, strong)
    return RoutingMetrics(curve.apgr, curve.cpt(0.5), curve.cpt(0.8))


def plot_pgr_curves(scores_by_router: Mapping[str, np.ndarray], weak: np.ndarray, strong: np.ndarray,
                    path: str | Path, title: str = "PGR vs strong-model call fraction") -> Path:
    """Write the PGR-vs-cost curves of several routers to a PNG (matplotlib is only needed here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, 1, 501)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for name, scores in scores_by_router.items():
        curve = pgr_curve(scores, weak, strong)
        ax.plot(grid * 100, curve.at(grid), label=f"{name} (APGR {curve.apgr:.3f})")
    ax.plot([0, 100], [0, 1], color="grey", linestyle=":", linewidth=1)
    for level in (0.5, 0.8):
        ax.axhline(level, color="grey", linewidth=0.5)
    ax.set_xlabel("calls to the strong model (%)")
    ax.set_ylabel("performance gap recovered")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
