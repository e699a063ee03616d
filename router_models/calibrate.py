"""Turn a cost target ("30% of traffic may go to the large model") into a score threshold.

Router scores are rankings more than probabilities, so the policy threshold is set from the score
distribution of a sample of real prompts: the rule is `score >= threshold` sends to the large model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    threshold: float
    strong_fraction: float  # what was asked for
    achieved_fraction: float  # on the sample; differs from the target only where scores tie
    n_prompts: int

    def as_dict(self) -> dict[str, float | int]:
        return {"threshold": self.threshold, "strong_fraction": self.strong_fraction,
                "achieved_fraction": self.achieved_fraction, "n_prompts": self.n_prompts}


def routes_to_strong(scores: np.ndarray | float, threshold: float) -> np.ndarray:
    return np.asarray(scores) >= threshold


def threshold_for_strong_fraction(scores: np.ndarray, strong_fraction: float) -> Calibration:
    """Threshold halfway between the k-th and (k+1)-th highest score, k = round(fraction · n).

    The midpoint, rather than the k-th score itself, keeps unseen prompts near the boundary from
    all falling on one side.
    """
    if not 0.0 <= strong_fraction <= 1.0:
        raise ValueError(f"strong fraction must be in [0, 1], got {strong_fraction}")
    ranked = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if ranked.size == 0:
        raise ValueError("need at least one prompt score to calibrate")
    k = int(round(strong_fraction * ranked.size))
    if k == 0:
        threshold = float(np.nextafter(ranked[0], np.inf))
    elif k == ranked.size:
        threshold = float(ranked[-1])
    else:
        threshold = float((ranked[k - 1] + ranked[k]) / 2) if ranked[k - 1] != ranked[k] else float(ranked[k])
    achieved = float(routes_to_strong(ranked, threshold).mean())
    return Calibration(threshold, strong_fraction, achieved, int(ranked.size))
