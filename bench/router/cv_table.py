"""Subject-held-out cross-validation table for every router tried (RouteLLM MMLU outcome data).

    .venv/bin/python bench/router/cv_table.py --data /work/shared/data/routellm/mmlu --repeats 3

Each row: APGR / CPT(50%) / CPT(80%) from pooled out-of-fold scores of 5-fold GroupKFold over
subjects, averaged over `--repeats` random subject partitions (± is the std of APGR across them).
Embeddings are cached under ~/.cache/turnout, so only the first run embeds the 14k prompts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from router_models.baselines import PromptLengthRouter, RandomRouter  # noqa: E402
from router_models.data import load_outcomes  # noqa: E402
from router_models.embedding_cache import cached_embed  # noqa: E402
from router_models.encoder import Encoder  # noqa: E402
from router_models.evaluate import plot_pgr_curves, routing_metrics  # noqa: E402
from router_models.train import (
    DEFAULT_SPEC,
    MMLU_LABEL_ARTIFACTS,
    HeadSpec,
    cross_validate,
    cross_validate_scores,  # noqa: E402
)

CANDIDATES: list[tuple[str, HeadSpec]] = [
    ("logistic, features only, gain2", HeadSpec(inputs="features")),
    ("logistic, embedding, gain2", HeadSpec(inputs="embedding")),
    ("logistic, embedding+length, gain2", HeadSpec(inputs="embedding+length")),
    ("logistic, embedding+features, gain2", HeadSpec(inputs="embedding+features")),
    ("logistic, embedding+features, gain2, l2=2e-3", HeadSpec(inputs="embedding+features", l2=2e-3)),
    ("logistic, embedding+length, gain_soft", HeadSpec(label="gain_soft")),
    ("logistic, embedding+length, strong_only", HeadSpec(label="strong_only")),
    ("logistic, embedding+length, weak_wrong", HeadSpec(label="weak_wrong")),
    ("mlp64, embedding+features, gain2", HeadSpec(inputs="embedding+features", hidden=64, l2=0.01)),
    ("mlp64, embedding+length, gain2", HeadSpec(inputs="embedding+length", hidden=64, l2=0.01)),
]


def knn_scores(embeddings: np.ndarray, gain: np.ndarray, k: int):
    """kNN over labelled prompts: mean strong-minus-weak gain of the k most similar training prompts."""
    def score(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        similarity = embeddings[test] @ embeddings[train].T
        nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
        return gain[train][nearest].mean(axis=1)
    return score


def topic_rows(data, held_out_scores: np.ndarray, row) -> None:
    """How much of the head's skill is topic: compare with routers that know each subject's true gain.

    "subject mean" scores every prompt by its subject's true mean gain (a topic-only ceiling, not a
    router); breaking its ties by the head's held-out scores (1e-3 x the deviation from the subject's
    mean score, far below the gaps between subjects) shows whether the head ranks prompts *inside*
    a subject better than chance.
    """
    gain = data.strong - data.weak
    subject_gain = np.zeros(len(data))
    within = np.zeros(len(data))
    for subject in np.unique(data.groups):
        members = data.groups == subject
        subject_gain[members] = gain[members].mean()
        within[members] = held_out_scores[members] - held_out_scores[members].mean()
    tie_broken = subject_gain + 1e-3 * within
    for name, scores in (("subject mean gain (topic-only ceiling, in-sample)", subject_gain),
                         ("subject mean gain, ties broken by the held-out head", tie_broken)):
        m = routing_metrics(scores, data.weak, data.strong)
        row(name, m.apgr, m.cpt50, m.cpt80)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/routellm/mmlu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--plot", metavar="PNG", help="also plot held-out PGR curves (first partition)")
    args = parser.parse_args()

    data = load_outcomes(args.data)
    embeddings = cached_embed(Encoder(), data.prompts, show_progress=True)
    print(f"{len(data)} prompts, {len(set(data.groups))} subjects; weak {data.weak.mean():.3f}, "
          f"strong {data.strong.mean():.3f}; {args.folds}-fold GroupKFold over subjects "
          f"x {args.repeats} partitions\n")
    print("| router | APGR | CPT(50%) | CPT(80%) |")
    print("|---|---|---|---|")

    def row(name: str, apgr: float, cpt50: float, cpt80: float, std: float | None = None) -> None:
        spread = f" ± {std:.3f}" if std is not None else ""
        print(f"| {name} | {apgr:.3f}{spread} | {cpt50:.1%} | {cpt80:.1%} |", flush=True)

    oracle = routing_metrics(data.strong - data.weak, data.weak, data.strong)
    row("oracle (true gain; ceiling)", oracle.apgr, oracle.cpt50, oracle.cpt80)
    for router in (RandomRouter(0), PromptLengthRouter()):
        m = routing_metrics(router.score(data.prompts), data.weak, data.strong)
        row(f"{router.name} (no training)", m.apgr, m.cpt50, m.cpt80)
    gain = data.strong - data.weak
    curves = {router.name: router.score(data.prompts) for router in (RandomRouter(0), PromptLengthRouter())}
    for k in (50, 200):
        result = cross_validate_scores(knn_scores(embeddings, gain, k), data, args.folds, args.repeats)
        row(f"kNN k={k}, embedding, gain", *result.metrics.as_dict().values(), result.apgr_std)
        curves[f"kNN k={k} (held out)"] = result.out_of_fold
    excluded = list(MMLU_LABEL_ARTIFACTS)
    for name, spec in [*CANDIDATES, ("**default** " + DEFAULT_SPEC.description + f", minus {excluded}",
                                     DEFAULT_SPEC)]:
        started = time.perf_counter()
        exclude = excluded if spec is DEFAULT_SPEC else ()
        result = cross_validate(spec, data, embeddings, args.folds, args.repeats,
                                exclude_from_training=exclude)
        row(name, *result.metrics.as_dict().values(), result.apgr_std)
        print(f"<!-- {time.perf_counter() - started:.0f} s -->", file=sys.stderr)
        if spec is DEFAULT_SPEC:
            curves["default head (held out)"] = result.out_of_fold
            topic_rows(data, result.out_of_fold, row)
    if args.plot:
        title = "MMLU, subject-held-out (5-fold GroupKFold)"
        print(f"\nwrote {plot_pgr_curves(curves, data.weak, data.strong, args.plot, title=title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
