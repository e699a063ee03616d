"""Trained routing heads: a small numpy network over [prompt embedding, cheap prompt features].

The serving path needs nothing but numpy here (training lives in train.py). A head is stored as an
.npz of plain arrays plus a JSON metadata string, loaded with `allow_pickle=False`, so a weights
file can never execute code.

Outputs: "gain2" heads predict P(strong model correct) and P(weak model correct) with two logits;
the score is their difference, the expected quality gained by routing to the strong model, mapped
from [-1, 1] to [0, 1]. "logit" heads predict one probability directly (e.g. P(only strong correct)).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .features import FEATURE_NAMES, prompt_features

HEAD_FORMAT = "turnout-router-head/1"
OUTPUTS = ("gain2", "logit")
DEFAULT_STRONG_FRACTION = 0.5


@dataclass(frozen=True)
class Head:
    weights: list[np.ndarray]  # per layer (out, in); ReLU between layers, none after the last
    biases: list[np.ndarray]
    output: str  # one of OUTPUTS
    uses_embedding: bool
    feature_names: tuple[str, ...]  # which of features.FEATURE_NAMES feed the head, in this order
    feature_mean: np.ndarray
    feature_std: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)  # provenance: label, data, CV metrics
    # Scores of the training prompts at quantiles 0, 1/100, ..., 1: a built-in calibration sample.
    score_quantiles: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown head output {self.output!r}; expected one of {OUTPUTS}")
        unknown = set(self.feature_names) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"head uses unknown features {sorted(unknown)}")
        expected, actual = (2 if self.output == "gain2" else 1), self.weights[-1].shape[0]
        if actual != expected:
            raise ValueError(f"{self.output} head needs {expected} outputs, not {actual}")

    def inputs(self, prompts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        features = prompt_features(prompts, self.feature_names) if self.feature_names else None
        return head_inputs(embeddings if self.uses_embedding else None, features, self.feature_mean,
                           self.feature_std, expected_rows=len(prompts))

    def logits(self, x: np.ndarray) -> np.ndarray:
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ weight.T + bias
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        return x

    def score(self, prompts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        if len(prompts) == 0:
            return np.zeros(0)
        probabilities = _sigmoid(self.logits(self.inputs(prompts, embeddings)).astype(np.float64))
        if self.output == "gain2":
            gain: np.ndarray = (probabilities[:, 0] - probabilities[:, 1] + 1.0) / 2.0
            return gain
        only: np.ndarray = probabilities[:, 0]
        return only

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": HEAD_FORMAT, "output": self.output, "layers": len(self.weights),
                "uses_embedding": self.uses_embedding, "feature_names": list(self.feature_names)}
        arrays = {"meta": np.array(json.dumps(meta, sort_keys=True)),
                  "feature_mean": self.feature_mean.astype(np.float32),
                  "feature_std": self.feature_std.astype(np.float32)}
        arrays["score_quantiles"] = np.asarray(self.score_quantiles, dtype=np.float64)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"layer{i}_weight"] = weight.astype(np.float32)
            arrays[f"layer{i}_bias"] = bias.astype(np.float32)
        with path.open("wb") as f:  # np.savez_compressed(path) would append ".npz" to other suffixes
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy: a **dict might fill allow_pickle
        return path

    @classmethod
    def load(cls, path: str | Path) -> Head:
        with np.load(Path(path), allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta.get("format") != HEAD_FORMAT:
                raise ValueError(f"{path}: not a {HEAD_FORMAT} file (format={meta.get('format')!r})")
            layers = int(meta["layers"])
            weights = [stored[f"layer{i}_weight"] for i in range(layers)]
            biases = [stored[f"layer{i}_bias"] for i in range(layers)]
            return cls(weights, biases, meta["output"], bool(meta["uses_embedding"]),
                       tuple(meta["feature_names"]), stored["feature_mean"], stored["feature_std"], meta,
                       stored["score_quantiles"])

    def with_calibration(self, prompts: Sequence[str], embeddings: np.ndarray | None) -> Head:
        """A copy that remembers the score distribution of `prompts` (for `threshold_for_fraction`)."""
        quantiles = np.quantile(self.score(prompts, embeddings), np.linspace(0, 1, 101))
        return replace(self, score_quantiles=quantiles)


class LearnedRouter:
    """A `Router` backed by a trained `Head`, fed by the encoder the head was trained on.

    The head's meta "encoder" names its input vectors (router_models/encoders.py). When they start
    with the gateway's shared MiniLM vector, the router takes the embedding the gateway computed
    anyway (`needs_embeddings`) and computes only the rest (e.g. the static part, ~0.1 ms); vectors
    from any other encoder are never mixed in, the router embeds the prompt itself.
    """

    def __init__(self, head: Head, name: str = "embedding", embed: Any = None) -> None:
        from .encoders import SHARED_ENCODER_NAME

        self.head = head
        self.name = name
        self.encoder_name = str(head.meta.get("encoder", SHARED_ENCODER_NAME))
        first, *rest = self.encoder_name.split("+")
        self.needs_embeddings = head.uses_embedding and first == SHARED_ENCODER_NAME
        self._rest = "+".join(rest)  # what to add to a given shared embedding ("" for nothing)
        self._embed = embed  # callable list[str] -> vectors of the whole encoder; defaults to the named one

    def load_encoder(self) -> None:
        """Load now what `score` would embed with itself (e.g. the static table, ~0.2 s), so that the
        first request does not pay for it on the event loop. The shared MiniLM stays the gateway's."""
        from .encoders import encoder_named

        if self.needs_embeddings and self._rest:
            encoder_named(self._rest)
        elif self.head.uses_embedding and not self.needs_embeddings and self._embed is None:
            self._embed = encoder_named(self.encoder_name).embed

    def score(self, prompts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        if not self.head.uses_embedding:
            return self.head.score(prompts, None)
        if embeddings is not None and self.needs_embeddings:
            if self._rest:
                from .encoders import encoder_named

                embeddings = np.concatenate([embeddings, encoder_named(self._rest).embed(list(prompts))], axis=1)
        else:
            if self._embed is None:
                from .encoders import encoder_named

                self._embed = encoder_named(self.encoder_name).embed
            embeddings = self._embed(list(prompts))
        return self.head.score(prompts, embeddings)

    @property
    def threshold(self) -> float:
        """Default cut-off: half of training-like traffic goes large (routing.strong_fraction overrides)."""
        return self.threshold_for_fraction(DEFAULT_STRONG_FRACTION)

    def threshold_for_fraction(self, strong_fraction: float) -> float:
        """Score threshold sending `strong_fraction` of prompts like the training ones to the large model.

        Traffic differs from training data; `turnout router calibrate` on real prompts is better.
        """
        if not 0.0 <= strong_fraction <= 1.0:
            raise ValueError(f"strong fraction must be in [0, 1], got {strong_fraction}")
        quantiles = self.head.score_quantiles
        if quantiles.size == 0:
            raise ValueError(f"router {self.name!r} has no calibration sample; calibrate on prompts instead")
        return float(np.interp(1.0 - strong_fraction, np.linspace(0, 1, quantiles.size), quantiles))


def head_inputs(embeddings: np.ndarray | None, features: np.ndarray | None, feature_mean: np.ndarray,
                feature_std: np.ndarray, expected_rows: int) -> np.ndarray:
    """The head's input matrix: [embedding, standardised features], float32."""
    parts = []
    if embeddings is not None:
        if embeddings.shape[0] != expected_rows:
            raise ValueError(f"got {embeddings.shape[0]} embeddings for {expected_rows} prompts")
        parts.append(np.asarray(embeddings, dtype=np.float32))
    if features is not None:
        parts.append((features - feature_mean) / feature_std)
    if not parts:
        raise ValueError("a head needs an embedding or features")
    return np.concatenate(parts, axis=1).astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
