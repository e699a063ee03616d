"""Semantic cache quality on the labelled pairs in pairs.jsonl: paraphrase hit rate and false-hit rate.

Two measurements:
1. pairs: for every pair, would b be answered by a's entry? (cosine >= floor and the verifier accepts:
   gateway/cache/matching/verifier.py), over a range of cosine floors, with and without the verifier;
2. store: all a-sides stored in one scope of a real Redis (the ResponseCache, vector sets), every
   b-side looked up: a paraphrase must hit its own a, a contrast must hit nothing.

    .venv/bin/python -m bench.cache.semantic_bench [--threshold 0.6] [--min-probability 0.85]
        [--quantization noquant] [--pairs bench/cache/pairs_holdout.jsonl] [--model lexical|aligned|contextual]
        [--judge qwen2.5-coder-1.5b-instruct]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import get_args

import numpy as np

from gateway.cache import CacheConfig, ResponseCache
from gateway.cache.matching import VerifierModel
from gateway.cache.matching.judge import Judge
from gateway.cache.matching.verifier import default_min_probability, verdict
from gateway.types import BackendRequest, StreamEvent

PAIRS = Path(__file__).with_name("pairs.jsonl")
THRESHOLDS = [round(t, 2) for t in [*np.arange(0.56, 0.86, 0.02), *np.arange(0.86, 0.97, 0.04)]]


def load_pairs(path: Path = PAIRS) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def embed_all(texts: list[str]) -> dict[str, np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from router_models.encoder import Encoder

    unique = sorted(set(texts))
    return dict(zip(unique, Encoder().embed(unique), strict=True))


def pair_table(pairs: list[dict[str, str]], vectors: dict[str, np.ndarray], min_probability: float,
               model: VerifierModel) -> None:
    similarity = np.array([float(vectors[p["a"]] @ vectors[p["b"]]) for p in pairs])
    vetoed = np.array([verdict(p["b"], p["a"], s, min_probability, model) is not None
                       for p, s in zip(pairs, similarity, strict=True)])
    paraphrase = np.array([p["label"] == "paraphrase" for p in pairs])
    kinds = sorted({p["kind"] for p in pairs if p["label"] == "contrast"})
    kind_of = np.array([p["kind"] for p in pairs])

    print(f"pairs: {paraphrase.sum()} paraphrase, {(~paraphrase).sum()} contrast "
          f"({', '.join(f'{k} {int((kind_of == k).sum())}' for k in kinds)})")
    print(f"the {model} verifier (min P {min_probability}) rejects {vetoed[paraphrase].mean():.1%} of paraphrases and "
          f"{vetoed[~paraphrase].mean():.1%} of contrasts, whatever the cosine floor\n")
    print("| cosine floor | paraphrase hit (verified) | false hit (verified) | paraphrase hit (cosine only) "
          "| false hit (cosine only) | " + " | ".join(f"false: {k}" for k in kinds) + " |")
    print("|---" * (5 + len(kinds)) + "|")
    for threshold in THRESHOLDS:
        above = similarity >= threshold
        hit = above & ~vetoed
        per_kind = [f"{hit[kind_of == k].mean():.1%}" for k in kinds]
        print(f"| {threshold:.2f} | {hit[paraphrase].mean():.1%} | {hit[~paraphrase].mean():.1%} "
              f"| {above[paraphrase].mean():.1%} | {above[~paraphrase].mean():.1%} | "
              + " | ".join(per_kind) + " |")


def request(text: str) -> BackendRequest:
    return BackendRequest(kind="chat", model="bench", messages=[{"role": "user", "content": text}],
                          params={"temperature": 0})


class TimedJudge:
    """The judge, with the wall time of each verdict."""

    def __init__(self, judge: Judge):
        self.judge = judge
        self.seconds: list[float] = []

    async def log_odds(self, cached_prompt: str, prompt: str) -> float:
        start = time.perf_counter()
        try:
            return await self.judge.log_odds(cached_prompt, prompt)
        finally:
            self.seconds.append(time.perf_counter() - start)

    async def warm(self) -> None:
        await self.judge.warm()


def load_judge(model: str) -> Judge:
    from engine.loader import load_model
    from engine.store import resolve
    from gateway.cache.matching.judge import EngineJudge

    return EngineJudge(load_model(model, resolve(model), pack=True))


async def store_table(pairs: list[dict[str, str]], vectors: dict[str, np.ndarray], threshold: float,
                      quantization: str, min_probability: float, model: VerifierModel,
                      judge: Judge | None = None, judge_both_ways: bool = False) -> None:
    config = CacheConfig(similarity_threshold=threshold, vector_quantization=quantization,
                         verifier_min_probability=min_probability, verifier_model=model,
                         judge_both_ways=judge_both_ways)
    cache = await ResponseCache.open(config)
    timed = cache.judge = TimedJudge(judge) if judge is not None else None
    try:
        if timed is not None:
            await timed.warm()
        for text in sorted({p["a"] for p in pairs}):
            events = [StreamEvent(text=text, finish_reason="stop")]
            await cache.store("bench", request(text), vectors[text], events)
        outcomes: Counter[str] = Counter()
        false_hits, wrong_hits = [], []
        for pair in pairs:
            if pair["b"] in {p["a"] for p in pairs}:
                continue  # b is itself stored: an exact hit, not a semantic one
            lookup = await cache.lookup("bench", request(pair["b"]), vectors[pair["b"]])
            served = lookup.events[0].text if lookup.events else None
            if pair["label"] == "paraphrase":
                outcomes["paraphrase"] += 1
                outcomes["paraphrase-hit"] += served == pair["a"]
                if served is not None and served != pair["a"]:
                    outcomes["paraphrase-wrong-hit"] += 1
                    wrong_hits.append((pair["b"], served, lookup.similarity))
            else:
                outcomes["contrast"] += 1
                if served is not None:
                    outcomes["contrast-hit"] += 1
                    false_hits.append((pair["b"], served, lookup.similarity))
        print(f"\nstore: {len({p['a'] for p in pairs})} entries in one scope, cosine floor {threshold}, "
              f"{model} verifier, min P {min_probability}, {quantization}, "
              + (f"judged: {len(timed.seconds)} verdicts, median {np.median(timed.seconds):.2f} s"
                 if timed and timed.seconds else "no judge"))
        print(f"paraphrase hit {outcomes['paraphrase-hit'] / outcomes['paraphrase']:.1%} "
              f"({outcomes['paraphrase-hit']}/{outcomes['paraphrase']}), wrong-entry hits "
              f"{outcomes['paraphrase-wrong-hit']}; contrast false hit "
              f"{outcomes['contrast-hit'] / outcomes['contrast']:.1%} "
              f"({outcomes['contrast-hit']}/{outcomes['contrast']})")
        for label, hits in (("false hit", false_hits), ("wrong entry", wrong_hits)):
            for query, served, similarity in hits:
                print(f"  {label} {similarity:.3f}: {query!r} <- {served!r}")
        print("guard vetoes:", {k: v for k, v in cache.stats.items() if k.startswith("vetoed")})
    finally:
        await cache.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=Path, default=PAIRS, help="pairs_holdout.jsonl: written after tuning")
    parser.add_argument("--threshold", type=float, nargs="+", default=[CacheConfig().similarity_threshold])
    parser.add_argument("--model", choices=get_args(VerifierModel), default=CacheConfig().verifier_model)
    parser.add_argument("--min-probability", type=float, default=None,
                        help="default: the model's own; with --judge, cache.verifier_min_probability_judged")
    parser.add_argument("--quantization", choices=["noquant", "q8", "bin"],
                        default=CacheConfig().vector_quantization)
    parser.add_argument("--judge", metavar="MODEL", help="judge would-be hits with this model in-process "
                        "(the gateway's default: the large tier's, qwen2.5-coder-1.5b-instruct)")
    parser.add_argument("--judge-both-ways", action="store_true", help="cache.judge_both_ways")
    args = parser.parse_args()
    judge = load_judge(args.judge) if args.judge else None
    pairs = load_pairs(args.pairs)
    vectors = embed_all([text for p in pairs for text in (p["a"], p["b"])])
    min_probability = args.min_probability
    if min_probability is None:  # as the gateway: a lower bar when a judge checks the verifier's hits
        min_probability = (CacheConfig().verifier_min_probability_judged if judge
                           else default_min_probability(args.model))
    pair_table(pairs, vectors, min_probability, args.model)
    for threshold in args.threshold:
        asyncio.run(store_table(pairs, vectors, threshold, args.quantization, min_probability, args.model, judge,
                                args.judge_both_ways))


if __name__ == "__main__":
    main()
