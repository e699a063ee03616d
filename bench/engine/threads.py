"""How many torch threads per decode width? Times one forward of `width` new tokens over a 256-token
cache, for 1 and 2 threads (the guide measured MKL with 2 threads as pathological for 2–8-row matmuls).

    .venv/bin/python -m bench.engine.threads [--model qwen2.5-coder-1.5b-instruct]
"""

from __future__ import annotations

import argparse

import torch

from bench.common import markdown_table
from drafters.evaluate import step_time
from engine.loader import load_model
from engine.store import resolve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 5, 8, 16])
    args = parser.parse_args()
    model = load_model(args.model, resolve(args.model)).model
    rows = []
    for width in args.widths:
        times = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            times[threads] = step_time(model, width)
        rows.append([width, f"{times[1] * 1000:.0f}", f"{times[2] * 1000:.0f}", f"{times[1] / times[2]:.2f}×"])
    print(markdown_table(["tokens per forward", "1 thread ms", "2 threads ms", "2-thread speedup"], rows))


if __name__ == "__main__":
    main()
