"""What one forward pass costs per shape, linear backend and thread count.

Rows × tokens per row covers both uses of a wide step: batched decoding (8 rows × 1 token) and
speculative verification (1 row × k+1 tokens). Backends: torch's default `F.linear` (MKL) and
oneDNN-packed weights as the engine loads them (engine/packed_linear.py: 8-row layout, inputs padded to
4 rows), swapped in place on one loaded model and measured interleaved, so drift hits both alike. Times
are medians over a 256-token KV cache.

    nice -n -15 .venv/bin/python -m bench.engine.step_cost [--model qwen2.5-coder-1.5b-instruct]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from bench.common import markdown_table
from drafters.costs import step_time
from engine.loader import load_model
from engine.packed_linear import PackedLinear, replace_module
from engine.store import resolve

SHAPES = [(1, 1), (1, 2), (1, 4), (1, 8), (1, 16), (2, 1), (4, 1), (8, 1)]


class Swapper:
    """Holds both versions of every linear layer and installs one set or the other."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.dense = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.packed = {name: PackedLinear(m) for name, m in self.dense.items()}

    def use(self, modules: dict[str, nn.Module]) -> None:
        for name, module in modules.items():
            replace_module(self.model, name, module)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    model = load_model(args.model, resolve(args.model)).model
    swap = Swapper(model)
    arms = [(backend, threads) for threads in args.threads for backend in ("mkl", "packed")]
    rows, base = [], None
    for batch, width in SHAPES:
        times = {}
        for backend, threads in arms:
            torch.set_num_threads(threads)
            swap.use(swap.dense if backend == "mkl" else swap.packed)
            times[backend, threads] = step_time(model, width, rows=batch)
        base = base or times
        rows.append([f"{batch} × {width}"]
                    + [f"{times[arm] * 1000:.0f} ({times[arm] / base[arm]:.1f}×)" for arm in arms]
                    + [f"{times['mkl', args.threads[0]] / min(times.values()):.2f}×"])
    headers = ["rows × tokens"] + [f"{b} {t}T ms (vs 1×1)" for b, t in arms] + ["best vs MKL 1T"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
