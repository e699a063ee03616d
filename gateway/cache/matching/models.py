"""The verifier's fitted models, evaluated in plain Python and numpy; their parameters are data.

Each model's parameters, and the probability a hit needs, live in `weights/<model>.json`, written by
`python -m bench.cache.train_verifier --model <model>`: refitting rewrites a data file, never code.

- "lexical": a logistic regression. Enough when the features are independent pieces of evidence.
- "aligned", "contextual": a small bagged MLP. With word-alignment features the evidence interacts (high
  word overlap means "paraphrase" when every word is matched, "contrast" when one is not), which a linear
  model cannot express; and a 16-unit net fitted on a few hundred pairs depends on its random start, which
  averaging a few members removes.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_DIR = Path(__file__).with_name("weights")


def weights_file(model: str) -> Path:
    """Where `model`'s fitted parameters are stored (shipped as package data)."""
    return WEIGHTS_DIR / f"{model}.json"


@dataclass(frozen=True)
class Logistic:
    """sigmoid(bias + weights · features), in raw feature units (the trainer folds its standardisation in)."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    min_probability: float

    def probability(self, features: tuple[float, ...]) -> float:
        """P(paraphrase)."""
        z = self.bias + sum(w * x for w, x in zip(self.weights, features, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_json(self) -> str:
        return json.dumps({"features": list(self.features), "min_probability": self.min_probability,
                           "weights": list(self.weights), "bias": self.bias})


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


def _stored(model: str) -> dict[str, Any]:
    stored: dict[str, Any] = json.loads(weights_file(model).read_text())
    return stored


@functools.cache
def load_logistic(model: str = "lexical") -> Logistic:
    """The fitted logistic regression `model`."""
    stored = _stored(model)
    return Logistic(features=tuple(stored["features"]), weights=tuple(float(w) for w in stored["weights"]),
                    bias=float(stored["bias"]), min_probability=float(stored["min_probability"]))


@functools.cache
def load_mlp(model: str = "aligned") -> BaggedMlp:
    """The fitted bagged MLP `model`."""
    stored = _stored(model)
    return BaggedMlp(features=tuple(stored["features"]), min_probability=float(stored["min_probability"]),
                     **{name: np.asarray(stored[name], dtype=np.float64) for name in _ARRAYS})
