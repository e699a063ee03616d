"""APGR of the small model's mean prompt surprisal (router_models/surprisal.py) on the validation sets.

Nothing is trained, so every number is held-out. On 2 shared CPU cores SmolLM2-135M scores only tens
of tokens per second, so MMLU is scored on a seeded random sample (`--mmlu-sample`), and random and
length are reported on that same sample beside it. Surprisals are cached under the cache dir, chunk by
chunk, so an interrupted run resumes.

    PYTHONPATH=. .venv/bin/python bench/router/surprisal_apgr.py --mmlu /work/shared/data/routellm/mmlu \
        --alpacaeval /work/shared/data/alpacaeval --mmlu-sample 600 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from router_models.baselines import PromptLengthRouter, RandomRouter
from router_models.data import OutcomeData, load_outcomes
from router_models.derived import cache_root
from router_models.embedding_cache import cached_embed
from router_models.evaluate import routing_metrics
from router_models.surprisal import DEFAULT_MAX_TOKENS, SurprisalEncoder, SurprisalRouter

ALPACAEVAL_JUDGES = {"alpacaeval-j1": "mixtral_vs_gpt4_1106_gpt4_turbo_fn.jsonl",
                     "alpacaeval-j2": "mixtral_vs_gpt4_1106_cot_gpt4_turbo_fn.jsonl"}


def sets(mmlu: Path | None, alpacaeval: Path | None, sample: int, seed: int) -> dict[str, OutcomeData]:
    out: dict[str, OutcomeData] = {}
    if alpacaeval is not None:
        for name, file in ALPACAEVAL_JUDGES.items():
            out[name] = load_outcomes(alpacaeval / file, weak_column="weak_quality", strong_column="strong_quality")
    if mmlu is not None:
        data = load_outcomes(mmlu)
        if 0 < sample < len(data):
            # a prefix of one seeded permutation, scored in that order: a smaller sample is part of every
            # larger one, and a run stopped part-way has cached a random sample, not the first subjects
            data = data.subset(np.random.default_rng(seed).permutation(len(data))[:sample])
        out[f"mmlu (sample of {len(data)})"] = data
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmlu", type=Path)
    parser.add_argument("--alpacaeval", type=Path)
    parser.add_argument("--mmlu-sample", type=int, default=600, help="0 = all prompts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--chunk", type=int, default=32, help="prompts per cache write")
    parser.add_argument("--cache-dir", type=Path, help="default: $TURNOUT_HOME (the model store's home)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.cache_dir = cache_root(args.cache_dir)

    import torch

    torch.set_num_threads(2)
    encoder = SurprisalEncoder(max_tokens=args.max_tokens)
    router = SurprisalRouter(encoder, cache_dir=args.cache_dir)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, data in sets(args.mmlu, args.alpacaeval, args.mmlu_sample, args.seed).items():
        for start in range(0, len(data), args.chunk):  # fill the cache in chunks: progress survives a kill
            cached_embed(encoder, data.prompts[start : start + args.chunk], args.cache_dir)
        rows = {"random": RandomRouter().score(data.prompts), "length": PromptLengthRouter().score(data.prompts),
                "surprisal": router.score(data.prompts)}
        results[name] = {r: routing_metrics(s, data.weak, data.strong).as_dict() for r, s in rows.items()}
        results[name]["n"] = {"prompts": float(len(data))}
        print(name, {r: round(m["apgr"], 3) for r, m in results[name].items() if r != "n"}, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
