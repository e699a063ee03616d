"""Quality of each engine weight format against the fp32 engine, on the same prompts.

    nice -n -15 .venv/bin/python -m bench.engine.weights_quality [--models …] [--formats int8] [--out F]

Per model and format, beside fp32:
- greedy token agreement: the fp32 engine's greedy answers (64 tokens) to 50 ShareGPT and 50 MT-Bench first
  turns, fed back to the other format; the share of answer positions where its own top token is the fp32
  token (teacher forcing: one divergence does not count every later token as a miss), and the share of
  answers it reproduces exactly when it decodes on its own;
- perplexity on held text: 50 ShareGPT assistant replies (up to 256 tokens each) after their question;
- HumanEval pass@1: all 164 problems (`--humaneval N`: the first N), greedy, through the engine as served
  (8 concurrent streams, chat prompt and checker of `turnout router label --checker humaneval`, the answer
  cut at its code fence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
from pathlib import Path

import torch

from bench.common import markdown_table, timed_generate
from bench.datasets import humaneval_problems, mtbench_questions, sharegpt_conversations, sharegpt_prompts
from engine.engine import Engine
from engine.types import SamplingParams
from gateway.outcome_checks import HumanEvalChecker

ANSWER_TOKENS = 64
HELD_TOKENS = 256
HUMANEVAL_TOKENS = 512
FENCE_END = "\n```"
CODE_END = "\n```\n"  # the closing fence: "\n```python" opens one, so the stop string needs the newline after


def agreement_prompts() -> list[str]:
    return sharegpt_prompts(50, seed=1, max_chars=1500) + mtbench_questions()[:50]


def held_text(count: int = 50) -> list[tuple[str, str]]:
    """(question, reply) pairs from ShareGPT conversations not used for the agreement prompts."""
    pairs = [(c["conversations"][0]["value"], c["conversations"][1]["value"]) for c in sharegpt_conversations()
             if len(c.get("conversations", [])) >= 2 and c["conversations"][0].get("from") == "human"
             and c["conversations"][1].get("from") == "gpt" and 16 <= len(c["conversations"][0]["value"]) <= 1500
             and len(c["conversations"][1]["value"]) >= 200]
    return random.Random(2).sample(pairs, count)


async def answers(engine: Engine, prompts: list[str], params: SamplingParams, concurrency: int = 8
                  ) -> list[list[int]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> list[int]:
        async with gate:
            return (await timed_generate(engine, prompt, params)).token_ids

    return list(await asyncio.gather(*(one(p) for p in prompts)))


@torch.inference_mode()
def teacher_forced_agreement(engine: Engine, prompts: list[str], reference: list[list[int]]) -> float:
    model, hits, total = engine.loaded.model, 0, 0
    for prompt, answer in zip(prompts, reference, strict=True):
        prompt_ids = engine.encode_chat([{"role": "user", "content": prompt}])
        logits = model(input_ids=torch.tensor([prompt_ids + answer[:-1]])).logits[0, len(prompt_ids) - 1:]
        hits += int((logits.argmax(-1) == torch.tensor(answer)).sum())
        total += len(answer)
    return hits / total


@torch.inference_mode()
def perplexity(engine: Engine, pairs: list[tuple[str, str]]) -> float:
    model, nll, count = engine.loaded.model, 0.0, 0
    for question, reply in pairs:
        prompt_ids = engine.encode_chat([{"role": "user", "content": question}])
        reply_ids = engine.tokenizer.encode(reply, add_special_tokens=False)[:HELD_TOKENS]
        logits = model(input_ids=torch.tensor([prompt_ids + reply_ids])).logits[0, len(prompt_ids) - 1:-1]
        nll += float(torch.nn.functional.cross_entropy(logits.float(), torch.tensor(reply_ids), reduction="sum"))
        count += len(reply_ids)
    return math.exp(nll / count)


async def humaneval_pass_at_1(engine: Engine, rows: list[dict[str, str]]) -> float:
    checker = HumanEvalChecker()
    params = SamplingParams(max_tokens=HUMANEVAL_TOKENS, temperature=0.0, stop=[CODE_END])
    replies = await answers(engine, [checker.prompt_for(row["prompt"]) for row in rows], params)
    texts = [engine.tokenizer.decode(ids, skip_special_tokens=True) for ids in replies]
    return sum(checker.score(row, text + FENCE_END) for row, text in zip(rows, texts, strict=True)) / len(rows)


async def measure(name: str, weights: str, reference: list[list[int]] | None, humaneval: int
                  ) -> dict[str, object]:
    engine = Engine.load(name, weights=weights, max_batch_size=8, speculative=None, prefix_cache_mb=0,
                         progress=False)
    prompts = agreement_prompts()
    try:
        greedy = SamplingParams(max_tokens=ANSWER_TOKENS, temperature=0.0, ignore_eos=True)
        own = await answers(engine, prompts, greedy)
        result: dict[str, object] = {"model": name, "weights": weights, "answers": own,
                                     "perplexity": perplexity(engine, held_text())}
        if reference is not None:
            result["agreement"] = teacher_forced_agreement(engine, prompts, reference)
            result["identical"] = sum(a == b for a, b in zip(own, reference, strict=True)) / len(own)
        problems = humaneval_problems()[:humaneval]
        result["humaneval"] = await humaneval_pass_at_1(engine, problems)
        result["humaneval_problems"] = len(problems)
    finally:
        engine.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
    parser.add_argument("--formats", nargs="+", default=["int8"])
    parser.add_argument("--out", type=Path, default=None, help="also write the results (JSON lines) here")
    parser.add_argument("--humaneval", type=int, default=164, help="the first N HumanEval problems")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        base = asyncio.run(measure(name, "fp32", None, args.humaneval))
        results = [base] + [asyncio.run(measure(name, weights, base["answers"], args.humaneval))  # type: ignore[arg-type]
                            for weights in args.formats]
        for result in results:
            print(json.dumps({k: v for k, v in result.items() if k != "answers"}), flush=True)
            if args.out:
                with args.out.open("a") as out:
                    out.write(json.dumps({k: v for k, v in result.items() if k != "answers"}) + "\n")
            rows.append([name, result["weights"], f"{result.get('agreement', 1.0):.3f}",
                         f"{result.get('identical', 1.0):.2f}", f"{result['perplexity']:.3f}",
                         f"{result['humaneval']:.3f} ({result['humaneval_problems']})"])
    print(markdown_table(["model", "weights", "greedy token agreement", "identical answers", "perplexity",
                          "HumanEval pass@1 (problems)"], rows))


if __name__ == "__main__":
    main()
