"""The MMLU head and the small model's prompt surprisal, blended: every router on every set (RESULTS §9).

`default` ranks MMLU's hard subjects well and chat badly; `surprisal` the other way round. Two blends:
`blend-rank`, the mean of their percentile ranks within a set (nothing fitted), and `blend-fit`, a
logistic regression on (head logit, surprisal) fitted on MMLU only, whose head inputs are the head's
own group-held-out (out-of-fold) scores, so the blend never learns from a head score fitted on the same
prompt. On the MMLU sample `blend-fit` is itself subject-held-out CV. Surprisals are cached
(router_models.embedding_cache), so a rerun only scores new prompts.

    PYTHONPATH=. .venv/bin/python bench/router/blend_apgr.py --mmlu /work/shared/data/routellm/mmlu \
        --alpacaeval /work/shared/data/alpacaeval --two-tier humaneval=he-outcomes.jsonl --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression

from bench.router.surprisal_apgr import ALPACAEVAL_JUDGES
from router_models import load_router
from router_models.baselines import PromptLengthRouter, RandomRouter
from router_models.data import OutcomeData, load_outcomes
from router_models.derived import cache_root
from router_models.embedding_cache import cached_embed
from router_models.encoders import encoder_named
from router_models.evaluate import routing_metrics
from router_models.surprisal import SurprisalEncoder, SurprisalRouter
from router_models.train import HeadSpec, cross_validate, group_folds
from router_models.transfer import Cell, selection


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def features(head_scores: np.ndarray, surprisal: np.ndarray) -> np.ndarray:
    return np.column_stack([logit(head_scores), surprisal])


def fit_blend(x: np.ndarray, data: OutcomeData) -> LogisticRegression:
    return LogisticRegression().fit(x, (data.strong - data.weak) > 0)


def blend_rank(head_scores: np.ndarray, surprisal: np.ndarray) -> np.ndarray:
    return (rankdata(head_scores) + rankdata(surprisal)) / (2 * len(head_scores))


def mmlu_sample(mmlu: Path, sample: int, seed: int, cache_dir: Path) -> tuple[OutcomeData, np.ndarray]:
    """The MMLU sample of surprisal_apgr.py (a prefix of one seeded permutation) and the default head's
    out-of-fold scores on it, from group-held-out CV over all of MMLU with the head's own recipe."""
    data = load_outcomes(mmlu)
    head = load_router("default").head  # type: ignore[attr-defined]
    meta = head.meta
    folds = min(int(meta.get("cv", {}).get("folds", 5)), len(set(data.groups)))
    spec = HeadSpec(**meta["spec"])
    embeddings = None
    if spec.inputs.startswith("embedding"):
        embeddings = cached_embed(encoder_named(meta["encoder"]), data.prompts, cache_dir, show_progress=True)
    oof = cross_validate(spec, data, embeddings, n_splits=folds,
                         exclude_from_training=meta.get("excluded_groups", ())).out_of_fold
    index = np.random.default_rng(seed).permutation(len(data))[:sample]
    return data.subset(index), oof[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmlu", type=Path, required=True)
    parser.add_argument("--alpacaeval", type=Path)
    parser.add_argument("--two-tier", action="append", default=[], metavar="NAME=PATH",
                        help="outcomes from `turnout router label` (repeatable)")
    parser.add_argument("--mmlu-sample", type=int, default=2496)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="default: $TURNOUT_HOME (the model store's home)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.cache_dir = cache_root(args.cache_dir)

    import torch

    torch.set_num_threads(2)
    surprisal_router = SurprisalRouter(SurprisalEncoder(), cache_dir=args.cache_dir)
    default = load_router("default")

    mmlu, mmlu_head = mmlu_sample(args.mmlu, args.mmlu_sample, args.seed, args.cache_dir)
    mmlu_surprisal = surprisal_router.surprisal(mmlu.prompts)
    x_mmlu = features(mmlu_head, mmlu_surprisal)
    blend = fit_blend(x_mmlu, mmlu)
    print("blend-fit weights (head logit, surprisal), intercept:", blend.coef_[0].round(4).tolist(),
          round(float(blend.intercept_[0]), 4), flush=True)

    sets: dict[str, OutcomeData] = {f"mmlu (sample of {len(mmlu)})": mmlu}
    if args.alpacaeval is not None:
        for name, file in ALPACAEVAL_JUDGES.items():
            sets[name] = load_outcomes(args.alpacaeval / file, weak_column="weak_quality",
                                       strong_column="strong_quality")
    for item in args.two_tier:
        name, _, path = item.partition("=")
        sets[name] = load_outcomes(path)

    results: dict[str, dict[str, dict[str, float]]] = {}
    table: dict[str, dict[str, Cell]] = {}  # router -> set -> cell, for the rule's own selection
    for name, data in sets.items():
        if data is mmlu:
            head_scores, surprisal = mmlu_head, mmlu_surprisal
            fitted = np.zeros(len(data))
            for train, test in group_folds(data.groups, 5, seed=args.seed):
                fold_blend = fit_blend(x_mmlu[train], data.subset(train))
                fitted[test] = fold_blend.decision_function(x_mmlu[test])
        else:
            head_scores = default.score(data.prompts)
            surprisal = surprisal_router.surprisal(data.prompts)
            fitted = blend.decision_function(features(head_scores, surprisal))
        rows = {"random": RandomRouter().score(data.prompts), "length": PromptLengthRouter().score(data.prompts),
                "default": head_scores, "surprisal": surprisal, "blend-rank": blend_rank(head_scores, surprisal),
                "blend-fit": fitted}
        for router, scores in rows.items():
            table.setdefault(router, {})[name] = Cell(routing_metrics(scores, data.weak, data.strong))
        results[name] = {router: table[router][name].metrics.as_dict() for router in rows}
        differ = int(np.sum(data.weak != data.strong))
        results[name]["n"] = {"prompts": float(len(data)), "outcomes differ": float(differ)}
        print(name, f"(n={len(data)}, differ={differ})",
              {r: round(m["apgr"], 3) for r, m in results[name].items() if r != "n"}, flush=True)

    for chosen in selection(table):  # margins over the better of random and length, per set
        margins = {s: round(m, 3) for s, m in chosen.margins.items()}
        print(f"{chosen.router:11} worst margin {chosen.worst_margin:+.3f}  {margins}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
