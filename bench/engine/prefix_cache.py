"""bench/engine/prefix_cache.py: MT-Bench second turns with the prefix cache off vs on, same engine.

Per question the first turn is answered (greedy) with the cache on, so its prompt and answer are
stored, as a chat's earlier turn would be; then the second turn (question, answer, follow-up) runs with
prefix caching off (a scope of its own, where nothing is stored), then on, interleaved. The last row
is a new conversation's first turn, whose only shared start is the chat template's default system
prompt (stored by the questions before it).

    .venv/bin/python -m bench.engine.prefix_cache [--model qwen2.5-coder-1.5b-instruct] [--questions 6]
"""

from __future__ import annotations

import argparse
import asyncio
from statistics import median

from bench.common import Timing, markdown_table, timed_generate
from bench.datasets import mtbench_conversations
from engine.engine import Engine
from engine.types import SamplingParams


async def off_then_on(engine: Engine, messages: list[dict[str, str]], params: SamplingParams, run: int
                      ) -> tuple[Timing, Timing, int]:
    """(off, on, prompt tokens the on run reused). The off run is in a scope of its own, where nothing
    was stored before it: same engine, same code path, no reuse."""
    prefix_cache = engine.prefix_cache
    assert prefix_cache is not None
    off = await timed_generate(engine, messages, params, cache_scope=f"off-{run}")
    before = prefix_cache.hit_tokens
    on = await timed_generate(engine, messages, params)
    if on.token_ids != off.token_ids:
        raise AssertionError("the prefix cache changed the output")
    return off, on, prefix_cache.hit_tokens - before


def row(name: str, prompts: list[int], runs: list[tuple[Timing, Timing, int]]) -> list[object]:
    off_ttft = median(off.ttft_s for off, _, _ in runs)
    on_ttft = median(on.ttft_s for _, on, _ in runs)
    off_total = sum(off.total_s for off, _, _ in runs)
    on_total = sum(on.total_s for _, on, _ in runs)
    reused = sum(n for _, _, n in runs) / sum(prompts)
    return [name, len(runs), f"{median(prompts):.0f}", f"{reused:.0%}", f"{off_ttft:.2f}", f"{on_ttft:.2f}",
            f"**{off_ttft / on_ttft:.1f}×**", f"{off_total / on_total:.2f}×"]


async def run(args: argparse.Namespace) -> list[list[object]]:
    engine = Engine.load(args.model, max_batch_size=1)
    first_params = SamplingParams(max_tokens=args.first_tokens, temperature=0.0)
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0)
    conversations = mtbench_conversations()[args.skip : args.skip + args.questions + 1]
    second: list[tuple[Timing, Timing, int]] = []
    second_prompts: list[int] = []
    try:
        for question, follow_up in conversations[:-1]:
            first = [{"role": "user", "content": question}]
            answer = await timed_generate(engine, first, first_params)
            messages = [*first, {"role": "assistant", "content": engine.tokenizer.decode(answer.token_ids)},
                        {"role": "user", "content": follow_up}]
            second.append(await off_then_on(engine, messages, params, len(second)))
            second_prompts.append(len(engine.encode_chat(messages)))
            print(f"second turn: prompt {second_prompts[-1]} tokens, reused {second[-1][2]}, TTFT off "
                  f"{second[-1][0].ttft_s:.2f} s, on {second[-1][1].ttft_s:.2f} s", flush=True)
        new = [{"role": "user", "content": conversations[-1][0]}]
        fresh = await off_then_on(engine, new, params, len(second))
    finally:
        engine.close()
    return [row("second turn (first turn and its answer reused)", second_prompts, second),
            row("new conversation (default system prompt reused)", [len(engine.encode_chat(new))], [fresh])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--skip", type=int, default=16, help="MT-Bench questions to skip (the spec bench uses 0-15)")
    parser.add_argument("--first-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=32)
    rows = asyncio.run(run(parser.parse_args()))
    print(markdown_table(["prompt", "prompts", "prompt tokens (median)", "reused", "TTFT off s", "TTFT on s",
                          "TTFT speedup", "end-to-end speedup"], rows))


if __name__ == "__main__":
    main()
