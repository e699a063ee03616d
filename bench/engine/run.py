"""bench/engine: single-stream tok/s and TTFT per built-in model, transformers `generate` as the
reference, and aggregate tok/s of 8 concurrent streams vs the same 8 run one after another.

    .venv/bin/python -m bench.engine.run [--models smollm2-135m-instruct ...] [--tokens 64] [--threads 1 0]
                                         [--weights fp32 int8] [--attention turnout_stepwise sdpa]

`--threads 0` is the engine's default: every core the process may use while it is the only engine with work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from statistics import median

import torch

from bench.common import markdown_table, timed_generate
from bench.engine.prompts import PROMPTS
from engine.cpu_share import CPU_SHARE
from engine.engine import Engine
from engine.loader import load_model
from engine.stepwise_attention import STEPWISE
from engine.store import resolve
from engine.types import SamplingParams


def transformers_reference(engine: Engine, prompt: str, tokens: int) -> float:
    """tok/s of plain `model.generate` (greedy, same prompt, same length) on a copy of the model loaded the
    way transformers loads it (torch's default threads, MKL linear layers: the engine's are packed; SDPA)."""
    name = engine.model_id
    plain = load_model(name, resolve(name, progress=False)).model
    plain.set_attn_implementation("sdpa")
    ids = torch.tensor([engine.encode_chat([{"role": "user", "content": prompt}])])
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            plain.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
            return tokens / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


async def bench_model(name: str, weights: str, attention: str, tokens: int, concurrency: int, threads: int
                      ) -> list[object]:
    engine = Engine.load(name, max_batch_size=concurrency, speculative=None, prefix_cache_mb=0,  # batching alone
                         threads=threads or None, weights=weights)
    if attention != STEPWISE:
        engine.loaded.model.set_attn_implementation(attention)
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    try:
        await timed_generate(engine, "warm up", SamplingParams(max_tokens=4, temperature=0.0))
        single = [await timed_generate(engine, prompt, params) for prompt in PROMPTS[:concurrency]]
        start = time.perf_counter()
        together = await asyncio.gather(*(timed_generate(engine, p, params) for p in PROMPTS[:concurrency]))
        wall = time.perf_counter() - start
        reference = transformers_reference(engine, PROMPTS[0], tokens) if weights == "fp32" else None
    finally:
        engine.close()
    sequential_s = sum(t.total_s for t in single)
    sequential_tps = sum(t.tokens for t in single) / sequential_s
    concurrent_tps = sum(t.tokens for t in together) / wall
    return [
        name,
        weights,
        attention,
        threads or f"all ({CPU_SHARE.cores})",
        f"{sum(t.tokens_per_s for t in single) / len(single):.2f}",
        f"{reference:.2f}" if reference is not None else "–",
        f"{median(t.ttft_s for t in single) * 1000:.0f}",
        f"{sequential_tps:.2f}",
        f"{concurrent_tps:.2f}",
        f"{concurrent_tps / sequential_tps:.2f}×",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=[
        "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[0], help="torch threads per step; 0: the default")
    parser.add_argument("--weights", nargs="+", default=["fp32"], choices=["fp32", "int8"])
    parser.add_argument("--attention", nargs="+", default=[STEPWISE], choices=[STEPWISE, "sdpa"],
                        help="sdpa: transformers' own, as the engine loaded models before stepwise attention")
    args = parser.parse_args()
    rows = [asyncio.run(bench_model(name, weights, attention, args.tokens, args.concurrency, threads))
            for name in args.models for weights in args.weights for attention in args.attention
            for threads in args.threads]
    print(markdown_table(
        ["model", "weights", "attention", "threads", "engine tok/s (1 stream)", "transformers generate tok/s",
         "TTFT p50 ms",
         f"{args.concurrency} sequential tok/s", f"{args.concurrency} concurrent tok/s", "concurrency gain"],
        rows,
    ))


if __name__ == "__main__":
    main()
