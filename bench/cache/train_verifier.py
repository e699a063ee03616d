"""Fit the semantic-hit verifier (gateway/cache/matching/verifier.py) on bench/cache/pairs.jsonl, and only on it.

Candidates are the pairs a lookup would consider: cosine >= the candidate floor and no hard guard
veto. The printed table is the model's 5-fold cross-validated hit and false-hit rate on the whole
tuning set (repeated over shuffles); the min P a hit needs is the lowest (0.01 steps) whose
cross-validated false-hit rate on the labelled contrasts is <= 1%. Then the model is fitted on all of it:

- lexical: a logistic regression on standardised lexical features, folded back to raw feature units;
- aligned: lexical + word-alignment features, a bagged MLP (gateway/cache/matching/models.py);
- contextual: aligned + the alignment over MiniLM's contextual token outputs
  (gateway/cache/matching/contextual.py), the same kind of MLP.
Each writes gateway/cache/matching/weights/<model>.json, min P included.

With --reword, every a-side of pairs.jsonl that starts with one of REWORDINGS' prefixes is also added as a
paraphrase of itself with the other prefix ("How do I X?" / "How can I X?"): the labelled paraphrases are
real rewordings and the contrasts mostly one-word edits, so without these a model can learn "all words
match but one -> contrast" and count an auxiliary as that word. They are training rows only: the printed
hit rates are over the labelled paraphrases; their own CV hit rate is printed apart.

With --qualify, every paraphrase a-side of pairs.jsonl is also added as a contrast against itself with one
of QUALIFIERS appended ("How do I repot a cactus?" / "How do I repot a cactus for beginners?"): the
labelled set has 23 qualifier contrasts, too few for the model to learn that a content phrase on one side
only changes the question. Training rows only, like --reword; the min P rule counts labelled contrasts.

With --swap, every paraphrase a-side is also added as a contrast against itself with one content word
replaced by a related non-synonym of the tuning set's vocabulary (bench/cache/swap_contrasts.py: "Do I
need a visa to visit Canada?" / "Do I need a passport to visit Canada?"): one-word swaps of a verb or a
setting were most of the false hits left. Training rows only, like --qualify. Not used for the shipped
weights: fewer false hits, but fewer paraphrase hits too (bench/cache/RESULTS.md, 2026-11-30, late).

    .venv/bin/python -m bench.cache.train_verifier [--model lexical|aligned|contextual] [--floor 0.60] [--C 1.0]
        [--reword] [--qualify] [--swap]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import get_args

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier

from bench.cache.reword_check import reworded
from bench.cache.semantic_bench import PAIRS, embed_all, load_pairs
from bench.cache.swap_contrasts import Swapper, vocabulary
from gateway.cache.matching import VerifierModel, guards, models, verifier
from gateway.cache.matching.alignment import shared_aligner

PROBABILITIES = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
MAX_FALSE_HIT = 0.01
MLP_MEMBERS, MLP_HIDDEN, MLP_ALPHA = 4, 16, 1.0
"""Chosen by cross-validation on the tuning set (hidden 4/8/16 x alpha 0.1/1/3; 1 vs 4 members); the
contextual model's by the same (hidden 8/16/32 x alpha 0.3/1/3; 1 vs 4 members)."""
MIN_P_GRID = np.arange(0.30, 0.96, 0.01).round(2)
"""Candidates for min P (0.50-0.95 until 2026-11-30; widened when the contextual model's reached 0.50)."""

REWORDINGS = (("How do I ", "How can I "), ("How can I ", "How do I "), ("What is ", "What's "),
              ("What's ", "What is "), ("Can you ", "Could you "), ("Could you ", "Can you "))
"""The --reword rule: (prefix, replacement), applied to pairs.jsonl's a-sides only."""
QUALIFIERS = ("for beginners", "for kids", "on a budget", "in winter", "for a small apartment", "as a student",
              "at night", "for a large group", "in the rain", "for the first time", "after surgery",
              "with a toddler", "for a job interview", "in a small kitchen", "by hand", "during pregnancy",
              "for older adults", "in an old house", "for a wedding", "while traveling", "for sensitive skin",
              "in hot weather", "for a long trip", "in a shared office", "for a school project")
"""The --qualify rule: the i-th paraphrase a-side gets QUALIFIERS[i % len], before its final punctuation."""

Predictor = Callable[[np.ndarray], np.ndarray]
MLP_FEATURES = {"aligned": verifier.ALIGNED_FEATURES, "contextual": verifier.CONTEXTUAL_FEATURES}


def fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Weights and bias in raw feature units (the regression sees standardised features)."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, y)
    weights = model.coef_[0] / scale
    return weights, float(model.intercept_[0] - weights @ mean)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> Predictor:
    weights, bias = fit(x, y, c)
    return lambda rows: 1 / (1 + np.exp(-(rows @ weights + bias)))


def fit_mlp(x: np.ndarray, y: np.ndarray, seed: int = 0, min_probability: float = 0.5,
            model: VerifierModel = "aligned") -> models.BaggedMlp:
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    members = [MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN,), alpha=MLP_ALPHA, max_iter=3000,
                             random_state=seed * MLP_MEMBERS + m).fit((x - mean) / scale, y)
               for m in range(MLP_MEMBERS)]
    return models.BaggedMlp(
        features=MLP_FEATURES[model], mean=mean, scale=scale, min_probability=min_probability,
        hidden_weights=np.stack([m.coefs_[0] for m in members]),
        hidden_bias=np.stack([m.intercepts_[0] for m in members]),
        output_weights=np.stack([m.coefs_[1][:, 0] for m in members]),
        output_bias=np.array([m.intercepts_[1][0] for m in members]))


def fit_model(model: VerifierModel, x: np.ndarray, y: np.ndarray, c: float, seed: int) -> Predictor:
    if model == "lexical":
        return fit_logistic(x, y, c)
    mlp = fit_mlp(x, y, seed, model=model)
    return lambda rows: np.array([mlp.probability(tuple(row)) for row in rows])


def qualified(text: str, index: int) -> str:
    """`text` with the index-th qualifier appended before its closing punctuation."""
    body = text.rstrip()
    end = body[-1] if body[-1] in "?.!" else ""
    return f"{body[:len(body) - len(end)]} {QUALIFIERS[index % len(QUALIFIERS)]}{end}"


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
    parser.add_argument("--model", choices=get_args(VerifierModel), default="lexical")
    parser.add_argument("--floor", type=float, default=0.60, help="cosine below which no candidate is verified")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength (lexical)")
    parser.add_argument("--shuffles", type=int, default=5, help="repeats of the 5-fold cross-validation")
    parser.add_argument("--reword", action="store_true", help="add function-word rewordings as paraphrases")
    parser.add_argument("--qualify", action="store_true", help="add qualifier additions as contrasts")
    parser.add_argument("--swap", action="store_true", help="add one-word swaps as contrasts")
    args = parser.parse_args()
    pairs = load_pairs(PAIRS)
    sides = [p["a"] for p in pairs]
    extra = [{"label": "paraphrase", "kind": "reworded", "a": a, "b": b}
             for old, new in (REWORDINGS if args.reword else ()) for a, b in reworded(sides, old, new)]
    labelled = [p["a"] for p in pairs if p["label"] == "paraphrase"]
    extra += [{"label": "contrast", "kind": "qualified", "a": a, "b": qualified(a, i)}
              for i, a in enumerate(labelled if args.qualify else ())]
    if args.swap:
        swapper = Swapper(shared_aligner(), vocabulary([text for p in pairs for text in (p["a"], p["b"])]))
        extra += [{"label": "contrast", "kind": "swapped", "a": a, "b": b}
                  for i, a in enumerate(labelled) if (b := swapper.swapped(a, i)) is not None]
    vectors = embed_all([text for p in pairs + extra for text in (p["a"], p["b"])])
    pairs += distractor_pairs(pairs, vectors, args.floor) + extra
    similarity = np.array([float(vectors[p["a"]] @ vectors[p["b"]]) for p in pairs])
    paraphrase = np.array([p["label"] == "paraphrase" for p in pairs])
    hard = np.array([guards.hard_veto(p["b"], p["a"]) is not None for p in pairs])
    featurize = verifier.FEATURIZERS[args.model]
    x = np.array([featurize(p["b"], p["a"], s) for p, s in zip(pairs, similarity, strict=True)])
    candidates = np.where((similarity >= args.floor) & ~hard)[0]

    predicted = np.zeros(len(pairs))
    for seed in range(args.shuffles):
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        for train, test in folds.split(candidates, paraphrase[candidates]):
            predict = fit_model(args.model, x[candidates[train]], paraphrase[candidates[train]], args.C, seed)
            predicted[candidates[test]] += predict(x[candidates[test]]) / args.shuffles
    distractor = np.array([p["kind"] == "distractor" for p in pairs])
    qualifier = np.array([p["kind"] == "qualified" for p in pairs])
    swap = np.array([p["kind"] == "swapped" for p in pairs])
    contrast = ~paraphrase & ~distractor & ~qualifier & ~swap
    added = np.array([p["kind"] == "reworded" for p in pairs])
    paraphrase_labelled = paraphrase & ~added
    min_probability = min(p for p in MIN_P_GRID
                          if (predicted >= p)[contrast].mean() <= MAX_FALSE_HIT)
    print(f"{args.model}: {len(candidates)} candidates (cosine >= {args.floor}, no hard veto) of {len(pairs)} pairs "
          f"(with {distractor.sum()} distractor contrasts, {added.sum()} added rewordings, "
          f"{qualifier.sum()} added qualifiers, {swap.sum()} added swaps)")
    print("| min P(paraphrase) | paraphrase hit (CV) | false hit (CV, labelled contrasts) | distractors accepted |")
    print("|---|---|---|---|")
    for p in sorted({*PROBABILITIES, min_probability}):
        hit = predicted >= p
        print(f"| {p} | {hit[paraphrase_labelled].mean():.1%} | {hit[contrast].mean():.1%} "
              f"| {hit[distractor].sum()} of {distractor.sum()} |")
        if added.any():
            print(f"|   added rewordings accepted (CV) | {hit[added].mean():.1%} | | |")
        if qualifier.any():
            print(f"|   added qualifiers accepted (CV) | | {hit[qualifier].mean():.1%} | |")
        if swap.any():
            print(f"|   added swaps accepted (CV) | | {hit[swap].mean():.1%} | |")
    print(f"\nmin P by the rule (lowest with CV false hit <= {MAX_FALSE_HIT:.0%}): {min_probability}")

    if args.model in verifier.MLP_MODELS:
        fitted: models.BaggedMlp | models.Logistic = fit_mlp(
            x[candidates], paraphrase[candidates], min_probability=float(min_probability), model=args.model)
    else:  # four decimals, as the shipped lexical weights
        weights, bias = fit(x[candidates], paraphrase[candidates], args.C)
        fitted = models.Logistic(features=verifier.FEATURES, weights=tuple(round(float(w), 4) for w in weights),
                                 bias=round(bias, 4), min_probability=float(min_probability))
    models.weights_file(args.model).write_text(fitted.to_json() + "\n")
    print(f"wrote {models.weights_file(args.model)}")


if __name__ == "__main__":
    main()
