"""Fit the semantic-hit verifier (gateway/cache/verifier.py) on bench/cache/pairs.jsonl, and only on it.

Candidates are the pairs a lookup would consider: cosine >= the candidate floor and no hard guard
veto. A logistic regression on standardised features is fitted to them; the printed table is its
5-fold cross-validated hit and false-hit rate on the whole tuning set (repeated over 5 shuffles), and
the constants to paste into verifier.py are the fit on all of it, folded back to raw feature units.

    .venv/bin/python -m bench.cache.train_verifier [--floor 0.60] [--C 1.0]
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from bench.cache.semantic_bench import PAIRS, embed_all, load_pairs
from gateway.cache import verifier

PROBABILITIES = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Weights and bias in raw feature units (the regression sees standardised features)."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, y)
    weights = model.coef_[0] / scale
    return weights, float(model.intercept_[0] - weights @ mean)


def distractor_pairs(pairs: list[dict[str, str]], vectors: dict[str, np.ndarray],
                     floor: float) -> list[dict[str, str]]:
    """Contrasts as a real cache meets them: each b-side against the other pairs' a-sides above the
    floor (in a cache every stored prompt is a candidate, not only the one it was written with).
    Pairs whose a-sides are paraphrases of each other are skipped: those are right answers."""
    own = {p["b"]: p["a"] for p in pairs}
    paraphrase_of = {p["a"]: p["b"] for p in pairs if p["label"] == "paraphrase"}
    sides = sorted({p["a"] for p in pairs})
    matrix = np.array([vectors[a] for a in sides])
    extra = []
    for b, a in own.items():
        for j in np.where(matrix @ vectors[b] >= floor)[0]:
            other = sides[j]
            if other != a and paraphrase_of.get(other) != b and other not in (paraphrase_of.get(a), b):
                extra.append({"label": "contrast", "kind": "distractor", "a": other, "b": b})
    return extra


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--floor", type=float, default=0.60, help="cosine below which no candidate is verified")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength")
    args = parser.parse_args()
    pairs = load_pairs(PAIRS)
    vectors = embed_all([text for p in pairs for text in (p["a"], p["b"])])
    pairs += distractor_pairs(pairs, vectors, args.floor)
    similarity = np.array([float(vectors[p["a"]] @ vectors[p["b"]]) for p in pairs])
    paraphrase = np.array([p["label"] == "paraphrase" for p in pairs])
    hard = np.array([any(guard(p["b"], p["a"]) for guard in verifier.HARD_GUARDS) for p in pairs])
    x = np.array([verifier.features(p["b"], p["a"], s) for p, s in zip(pairs, similarity, strict=True)])
    candidates = np.where((similarity >= args.floor) & ~hard)[0]

    predicted = np.zeros(len(pairs))
    for seed in range(5):
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        for train, test in folds.split(candidates, paraphrase[candidates]):
            weights, bias = fit(x[candidates[train]], paraphrase[candidates[train]], args.C)
            z = x[candidates[test]] @ weights + bias
            predicted[candidates[test]] += 1 / (1 + np.exp(-z)) / 5
    print(f"{len(candidates)} candidates (cosine >= {args.floor}, no hard veto) of {len(pairs)} pairs "
          f"(with {sum(p['kind'] == 'distractor' for p in pairs)} distractor contrasts)")
    distractor = np.array([p["kind"] == "distractor" for p in pairs])
    print("| min P(paraphrase) | paraphrase hit (CV) | false hit (CV, labelled contrasts) | distractors accepted |")
    print("|---|---|---|---|")
    for p in PROBABILITIES:
        hit = predicted >= p
        print(f"| {p} | {hit[paraphrase].mean():.1%} | {hit[~paraphrase & ~distractor].mean():.1%} "
              f"| {hit[distractor].sum()} of {distractor.sum()} |")

    weights, bias = fit(x[candidates], paraphrase[candidates], args.C)
    print(f"\nFEATURES = {verifier.FEATURES}")
    print(f"WEIGHTS = ({', '.join(f'{w:.4f}' for w in weights)})")
    print(f"BIAS = {bias:.4f}")


if __name__ == "__main__":
    main()
