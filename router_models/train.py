"""Fit routing heads on outcome data and measure them with group-held-out cross-validation.

Rows are never split at random: prompts of one subject share wording and topic, so a random split
rewards memorising subjects. Folds hold out whole groups (subjects), which is what a router meets
in production, prompts of kinds it never saw. Training needs torch (already a dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import OutcomeData
from .evaluate import RoutingMetrics, routing_metrics
from .features import FEATURE_NAMES, prompt_features
from .head import Head, head_inputs

if TYPE_CHECKING:  # imported where a head is fit: scoring and evaluating need no torch
    import torch

INPUTS: dict[str, tuple[bool, tuple[str, ...]]] = {  # name -> (uses embedding, feature names)
    "embedding": (True, ()),
    "embedding+length": (True, ("log_chars",)),
    "embedding+features": (True, FEATURE_NAMES),
    "features": (False, FEATURE_NAMES),
}

LABELS = {  # name -> head output; see `targets`
    "gain2": "gain2",
    "gain_soft": "logit",
    "strong_only": "logit",
    "weak_wrong": "logit",
}


# RouteLLM's MMLU labels for this subject are an answer-extraction artifact, not ability: GPT-4 scores
# 3% on a 4-choice test (chance is 25%). Learning from them would teach "math -> small model".
MMLU_LABEL_ARTIFACTS = ("high_school_mathematics",)


@dataclass(frozen=True)
class HeadSpec:
    """What to train. `hidden=0` is a linear (logistic) head; otherwise one ReLU hidden layer."""

    inputs: str = "embedding+length"
    label: str = "gain2"
    hidden: int = 0
    l2: float = 5e-4  # linear heads: penalty on the mean loss; MLPs: AdamW weight decay
    epochs: int = 10  # MLP only
    dropout: float = 0.2  # MLP only
    seed: int = 0

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise ValueError(f"unknown inputs {self.inputs!r}; choose from {sorted(INPUTS)}")
        if self.label not in LABELS:
            raise ValueError(f"unknown label {self.label!r}; choose from {sorted(LABELS)}")

    @property
    def description(self) -> str:
        model = f"mlp{self.hidden}" if self.hidden else "logistic"
        return f"{model} · {self.inputs} · label={self.label} · l2={self.l2:g}"


DEFAULT_SPEC = HeadSpec(inputs="embedding+length", label="gain2")


def targets(label: str, weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Training targets in [0, 1], (n, 2) for gain2 ([strong, weak]) else (n, 1).

    gain2: each model's own correctness, two low-noise labels whose predicted difference is the
    expected gain. gain_soft: (strong - weak + 1) / 2 as a soft label. strong_only: strong better
    than weak. weak_wrong: the weak model's failure, i.e. plain difficulty.
    """
    weak, strong = _unit_quality(weak, strong)
    if label == "gain2":
        return np.stack([strong, weak], axis=1)
    if label == "gain_soft":
        column = (strong - weak + 1.0) / 2.0
    elif label == "strong_only":
        column = (strong > weak).astype(np.float64)
    elif label == "weak_wrong":
        column = 1.0 - weak
    else:
        raise ValueError(f"unknown label {label!r}")
    one_column: np.ndarray = column[:, None]
    return one_column


def fit_head(spec: HeadSpec, prompts: Sequence[str], embeddings: np.ndarray | None, weak: np.ndarray,
             strong: np.ndarray, meta: dict[str, Any] | None = None) -> Head:
    import torch

    uses_embedding, feature_names = INPUTS[spec.inputs]
    features = prompt_features(prompts, feature_names)
    mean, std = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-6)
    if uses_embedding and embeddings is None:
        raise ValueError(f"inputs {spec.inputs!r} need embeddings")
    x = torch.tensor(head_inputs(embeddings if uses_embedding else None, features if feature_names else None,
                                 mean, std, expected_rows=len(prompts)))
    y = torch.tensor(targets(spec.label, weak, strong), dtype=torch.float32)
    torch.manual_seed(spec.seed)
    layers = fit_linear(x, y, spec.l2) if spec.hidden == 0 else _fit_mlp(x, y, spec)
    return Head([w for w, _ in layers], [b for _, b in layers], LABELS[spec.label], uses_embedding,
                feature_names, mean, std, meta={"spec": spec.__dict__, **(meta or {})})


def fit_linear(x: torch.Tensor, y: torch.Tensor, l2: float, sample_weight: np.ndarray | None = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Full-batch L-BFGS on the mean logistic loss + l2·|W|²: deterministic and fast for n ~ 10^4.

    `sample_weight` (one per row, rescaled to mean 1) reweights the loss, e.g. to even out group sizes.
    The fit runs in float64: in float32 L-BFGS stops on a loss change below float32's resolution while
    the weights are still ~1e-4 from the optimum, so equivalent problems (weights vs repeated rows) end
    in different places. The weights are returned as float32, as heads store them.
    """
    import torch

    x, y = x.to(torch.float64), y.to(torch.float64)
    weight = None if sample_weight is None else torch.tensor(sample_weight / np.mean(sample_weight),
                                                             dtype=torch.float64)[:, None]

    linear = torch.nn.Linear(x.shape[1], y.shape[1], dtype=torch.float64)
    torch.nn.init.zeros_(linear.weight)
    with torch.no_grad():
        linear.bias.copy_(torch.logit(y.mean(0).clamp(1e-4, 1 - 1e-4)))
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-6,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(linear(x), y, weight=weight)
        loss = loss + l2 * linear.weight.square().sum()
        loss.backward()  # type: ignore[no-untyped-call]  # torch: Tensor.backward is untyped
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]  # torch: LBFGS.step is untyped
    return [(linear.weight.detach().numpy().astype(np.float32), linear.bias.detach().numpy().astype(np.float32))]


def _fit_mlp(x: torch.Tensor, y: torch.Tensor, spec: HeadSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch

    nn = torch.nn
    hidden, output = nn.Linear(x.shape[1], spec.hidden), nn.Linear(spec.hidden, y.shape[1])
    net = nn.Sequential(nn.Dropout(spec.dropout), hidden, nn.ReLU(), nn.Dropout(spec.dropout), output)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=spec.l2)
    generator = torch.Generator().manual_seed(spec.seed)
    for _ in range(spec.epochs):
        for batch in torch.randperm(len(x), generator=generator).split(128):  # type: ignore[no-untyped-call]
            loss = nn.functional.binary_cross_entropy_with_logits(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # torch: Tensor.backward is untyped
            optimizer.step()
    return [(layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in (hidden, output)]


def group_folds(groups: np.ndarray, n_splits: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(train, test) indices; each group lands in exactly one test fold.

    Groups are taken in a seeded random order and each goes to the fold with the fewest rows so
    far, so folds are balanced and different seeds give different partitions (repeated CV).
    """
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < n_splits:
        raise ValueError(f"{len(names)} groups cannot fill {n_splits} folds")
    fold_of_group = np.empty(len(names), dtype=np.int64)
    load = np.zeros(n_splits)
    for g in np.random.default_rng(seed).permutation(len(names)):
        fold_of_group[g] = int(np.argmin(load))
        load[fold_of_group[g]] += counts[g]
    fold = fold_of_group[inverse]
    for k in range(n_splits):
        yield np.flatnonzero(fold != k), np.flatnonzero(fold == k)


@dataclass(frozen=True)
class CVResult:
    metrics: RoutingMetrics  # mean over repeats, each computed on that repeat's pooled out-of-fold scores
    apgr_std: float  # across repeats (partition noise)
    repeats: int
    out_of_fold: np.ndarray  # scores of the first repeat


def cross_validate(spec: HeadSpec, data: OutcomeData, embeddings: np.ndarray | None, n_splits: int = 5,
                   repeats: int = 1, exclude_from_training: Sequence[str] = ()) -> CVResult:
    """Group-held-out CV. Groups in `exclude_from_training` are still evaluated, never learned from."""
    excluded = np.isin(data.groups, list(exclude_from_training))
    runs = []
    for repeat in range(repeats):
        scores = np.zeros(len(data))
        for train, test in group_folds(data.groups, n_splits, seed=repeat):
            train = train[~excluded[train]]
            head = fit_head(spec, [data.prompts[i] for i in train], _rows(embeddings, train),
                            data.weak[train], data.strong[train])
            scores[test] = head.score([data.prompts[i] for i in test], _rows(embeddings, test))
        runs.append((routing_metrics(scores, data.weak, data.strong), scores))
    return _summarise(runs)


def cross_validate_scores(score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], data: OutcomeData,
                          n_splits: int = 5, repeats: int = 1) -> CVResult:
    """CV for routers that are fit by `score_fn(train_index, test_index) -> test scores` (e.g. kNN)."""
    runs = []
    for repeat in range(repeats):
        scores = np.zeros(len(data))
        for train, test in group_folds(data.groups, n_splits, seed=repeat):
            scores[test] = score_fn(train, test)
        runs.append((routing_metrics(scores, data.weak, data.strong), scores))
    return _summarise(runs)


def _summarise(runs: list[tuple[RoutingMetrics, np.ndarray]]) -> CVResult:
    apgrs = [m.apgr for m, _ in runs]
    mean = RoutingMetrics(float(np.mean(apgrs)), float(np.mean([m.cpt50 for m, _ in runs])),
                          float(np.mean([m.cpt80 for m, _ in runs])))
    return CVResult(mean, float(np.std(apgrs)), len(runs), runs[0][1])


def _rows(embeddings: np.ndarray | None, index: np.ndarray) -> np.ndarray | None:
    return None if embeddings is None else embeddings[index]


def _unit_quality(weak: np.ndarray, strong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both quality columns jointly into [0, 1] (True/False data is already there)."""
    weak, strong = np.asarray(weak, dtype=np.float64), np.asarray(strong, dtype=np.float64)
    low, high = min(weak.min(), strong.min()), max(weak.max(), strong.max())
    if low >= 0.0 and high <= 1.0:
        return weak, strong
    span = high - low if high > low else 1.0
    return (weak - low) / span, (strong - low) / span
