"""bench/engine: single-stream tok/s and TTFT per built-in model, transformers `generate` as the
reference, and aggregate tok/s of 8 concurrent streams vs the same 8 run one after another.

    .venv/bin/python -m bench.engine.run [--models smollm2-135m-instruct ...] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import torch

from bench.common import markdown_table, timed_generate
from engine.engine import Engine
from engine.types import SamplingParams

PROMPTS = [
    "Explain how a hash map works.",
    "Write a Python function that reverses a linked list.",
    "What are the main causes of inflation?",
    "Summarise the plot of Hamlet in a paragraph.",
    "Give me three tips for writing clean code.",
    "How does TCP congestion control work?",
    "Write a SQL query that finds duplicate emails in a users table.",
    "What is the difference between a process and a thread?",
]


def transformers_reference(engine: Engine, prompt: str, tokens: int) -> float:
    """tok/s of plain `model.generate` (greedy, same prompt, same length)."""
    ids = torch.tensor([engine.encode_chat([{"role": "user", "content": prompt}])])
    start = time.perf_counter()
    with torch.inference_mode():
        engine.loaded.model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return tokens / (time.perf_counter() - start)


async def bench_model(name: str, tokens: int, concurrency: int) -> list[object]:
    engine = Engine.load(name, max_batch_size=concurrency, speculative=None)
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    try:
        await timed_generate(engine, "warm up", SamplingParams(max_tokens=4, temperature=0.0))
        single = [await timed_generate(engine, prompt, params) for prompt in PROMPTS[:concurrency]]
        start = time.perf_counter()
        together = await asyncio.gather(*(timed_generate(engine, p, params) for p in PROMPTS[:concurrency]))
        wall = time.perf_counter() - start
        reference = transformers_reference(engine, PROMPTS[0], tokens)
    finally:
        engine.close()
    sequential_s = sum(t.total_s for t in single)
    sequential_tps = sum(t.tokens for t in single) / sequential_s
    concurrent_tps = sum(t.tokens for t in together) / wall
    return [
        name,
        f"{sum(t.tokens_per_s for t in single) / len(single):.2f}",
        f"{reference:.2f}",
        f"{sorted(t.ttft_s for t in single)[len(single) // 2] * 1000:.0f}",
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
    args = parser.parse_args()
    rows = [asyncio.run(bench_model(name, args.tokens, args.concurrency)) for name in args.models]
    print(markdown_table(
        ["model", "engine tok/s (1 stream)", "transformers generate tok/s", "TTFT p50 ms",
         f"{args.concurrency} sequential tok/s", f"{args.concurrency} concurrent tok/s", "concurrency gain"],
        rows,
    ))


if __name__ == "__main__":
    main()
