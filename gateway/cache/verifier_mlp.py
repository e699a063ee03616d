"""A small bagged MLP for the semantic-hit verifier, evaluated in numpy.

Why not the logistic regression: with word-alignment features the evidence interacts (high word overlap
means "paraphrase" when every word is matched, "contrast" when one is not), which a linear model cannot
express. Why an ensemble of a few nets: a 16-unit net fitted on ~500 pairs depends on its random start;
averaging a few removes most of that. Weights come from `bench.cache.train_verifier --model aligned` (or
`contextual`), which writes them to verifier_mlp.json (verifier_contextual.json) together with the
probability a hit needs (chosen there by cross-validation on bench/cache/pairs.jsonl).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHTS_FILES = {"aligned": Path(__file__).with_name("verifier_mlp.json"),
                 "contextual": Path(__file__).with_name("verifier_contextual.json")}


@dataclass(frozen=True)
class BaggedMlp:
    """Members share one input standardisation; each is relu(x W1 + b1) w2 + b2, then a sigmoid."""

    features: tuple[str, ...]
    mean: np.ndarray  # (f,)
    scale: np.ndarray  # (f,)
    hidden_weights: np.ndarray  # (members, f, h)
    hidden_bias: np.ndarray  # (members, h)
    output_weights: np.ndarray  # (members, h)
    output_bias: np.ndarray  # (members,)
    min_probability: float

    def probability(self, features: tuple[float, ...]) -> float:
        """P(paraphrase): the members' probabilities averaged."""
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        hidden = np.maximum(np.matmul(x, self.hidden_weights) + self.hidden_bias, 0.0)  # (members, h)
        z = np.clip((hidden * self.output_weights).sum(axis=1) + self.output_bias, -60.0, 60.0)
        return float(np.mean(1.0 / (1.0 + np.exp(-z))))

    def to_json(self) -> str:
        arrays = {name: getattr(self, name).tolist() for name in _ARRAYS}
        return json.dumps({"features": list(self.features), "min_probability": self.min_probability, **arrays})


_ARRAYS = ("mean", "scale", "hidden_weights", "hidden_bias", "output_weights", "output_bias")


@functools.cache
def load(model: str = "aligned") -> BaggedMlp:
    """The fitted weights of `model` (a key of WEIGHTS_FILES)."""
    stored = json.loads(WEIGHTS_FILES[model].read_text())
    return BaggedMlp(features=tuple(stored["features"]), min_probability=float(stored["min_probability"]),
                     **{name: np.asarray(stored[name], dtype=np.float64) for name in _ARRAYS})
