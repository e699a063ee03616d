"""Every router on every validation set, in one table, without scoring a head on its own training data.

A router tuned on one benchmark can look good there and be worse than random elsewhere (MMLU heads on
open-ended chat), so routers are compared across sets, beside the random and length baselines of each
set. When a set is the one a head was trained on (same prompt digest), the head's cell is its
group-held-out cross-validation with the head's own recipe (spec, encoder, excluded groups) instead
of an in-sample score (cell basis "cv"); only a set with a single group, where nothing can be held
out, falls back to an in-sample score, marked as such.

`selection` applies the rule of bench/router/RESULTS.md: a router qualifies when its APGR is above
both random's and length's on every set; among those, the largest worst-set margin wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .base import Router
from .data import OutcomeData
from .evaluate import RoutingMetrics, routing_metrics

BASELINES = ("random", "length")
Basis = Literal["scored", "cv", "in-sample"]  # not trained on the set / group-held-out CV / trained on it
Embedder = Callable[[Sequence[str], str | None], np.ndarray]  # (prompts, encoder name or None) -> vectors


@dataclass(frozen=True)
class Cell:
    metrics: RoutingMetrics
    basis: Basis = "scored"

    def as_dict(self) -> dict[str, float | str]:
        return {**self.metrics.as_dict(), "basis": self.basis}


@dataclass(frozen=True)
class Selection:
    router: str
    margins: dict[str, float]  # per set: APGR - max(random, length)

    @property
    def worst_margin(self) -> float:
        return min(self.margins.values())

    @property
    def passes(self) -> bool:
        return self.worst_margin > 0


def data_digest(prompts: Sequence[str]) -> str:
    """Order-independent fingerprint of a prompt set, to tell a head's own training data apart."""
    return hashlib.sha1(b"".join(sorted(hashlib.sha1(p.encode()).digest() for p in prompts))).hexdigest()


def shipped_router_names(weights_dir: Path) -> list[str]:
    """The router heads among the weights files (other .npz there, e.g. token counts, are not routers)."""
    from .head import Head

    names = []
    for file in sorted(weights_dir.glob("*.npz")):
        try:
            Head.load(file)
        except (ValueError, KeyError):
            continue
        names.append(file.stem)
    return sorted(names, key=lambda n: (n != "default", n))


def evaluate_cell(router: Router, data: OutcomeData, embed: Embedder) -> Cell:
    head = getattr(router, "head", None)
    meta: dict[str, Any] = {} if head is None else head.meta
    trained_here = head is not None and meta.get("training_data_digest") == data_digest(data.prompts)
    if trained_here and len(set(data.groups)) > 1:
        return Cell(_held_out(meta, data, embed), "cv")
    embeddings = embed(data.prompts, None) if router.needs_embeddings else None
    return Cell(routing_metrics(router.score(data.prompts, embeddings), data.weak, data.strong),
                "in-sample" if trained_here else "scored")


def _held_out(meta: dict[str, Any], data: OutcomeData, embed: Embedder) -> RoutingMetrics:
    from .train import HeadSpec, cross_validate

    spec = HeadSpec(**meta["spec"])
    embeddings = embed(data.prompts, meta.get("encoder")) if spec.inputs.startswith("embedding") else None
    folds = min(int(meta.get("cv", {}).get("folds", 5)), len(set(data.groups)))
    return cross_validate(spec, data, embeddings, n_splits=folds,
                          exclude_from_training=meta.get("excluded_groups", ())).metrics


def selection(table: dict[str, dict[str, Cell]]) -> list[Selection]:
    """Each non-baseline router's margins over the better baseline per set, best worst-set margin first."""
    sets = list(next(iter(table.values())))
    floor = {s: max(table[b][s].metrics.apgr for b in BASELINES if b in table) for s in sets}
    out = [Selection(name, {s: row[s].metrics.apgr - floor[s] for s in sets})
           for name, row in table.items() if name not in BASELINES]
    return sorted(out, key=lambda sel: -sel.worst_margin)
