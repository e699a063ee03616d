"""bench/load: ShareGPT prompts through `turnout serve` on the embedded models, streamed with the
official SDK at a fixed concurrency: TTFT, time per output token, throughput, routing split and
cache hit rate (a share of the prompts is asked twice), with a progress bar and a PNG plot.

The default config is examples/tiny.yaml (SmolLM2-135M for both tiers: finishes on a laptop CPU);
`--config gateway/default.yaml` runs the real Qwen pair. A config without a `cache:` section gets an
exact-match cache (embedded Redis) added, `--semantic` turns on the semantic cache too.

    .venv/bin/python -m bench.load.run [--config examples/tiny.yaml] [--prompts 48] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openai
import yaml
from tqdm import tqdm

from bench.datasets import sharegpt_prompts
from bench.overhead.servers import ROOT, ServerProcess, turnout_server


@dataclass
class Result:
    ttft_s: float
    total_s: float
    tokens: int
    tier: str
    cache: str
    finished_at: float
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; None for one-token answers and cache replays."""
        if self.tokens < 2 or self.cache in ("hit", "semantic-hit"):
            return None
        return (self.total_s - self.ttft_s) / (self.tokens - 1)


def effective_config(path: Path, semantic: bool, out: Path) -> Path:
    """The config as given, plus a cache section when it has none."""
    raw = yaml.safe_load(path.read_text()) or {}
    raw.setdefault("cache", {"semantic_enabled": semantic})
    target = out / "turnout.yaml"
    target.write_text(yaml.safe_dump(raw, sort_keys=False))
    return target


def workload(unique: int, repeat: float, seed: int) -> list[str]:
    """`unique` prompts, then `repeat` × as many again drawn from the first half, shuffled into the
    second half so that every repeat comes after its first asking (and can hit the cache)."""
    prompts = sharegpt_prompts(unique, seed=seed)
    rng = random.Random(seed)
    first, rest = prompts[: unique // 2], prompts[unique // 2:]
    tail = rest + [rng.choice(first) for _ in range(round(unique * repeat))]
    rng.shuffle(tail)
    return first + tail


async def ask(client: openai.AsyncOpenAI, prompt: str, max_tokens: int, started: float) -> Result:
    begin = time.perf_counter()
    first = None
    tokens = 0
    try:
        async with client.chat.completions.with_streaming_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                temperature=0, stream=True, stream_options={"include_usage": True}) as response:
            headers = response.headers
            async for chunk in await response.parse():
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - begin
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
    except openai.APIError as exc:
        return Result(0.0, time.perf_counter() - begin, 0, "-", "-", time.perf_counter() - started, str(exc))
    total = time.perf_counter() - begin
    return Result(first if first is not None else total, total, tokens, headers.get("x-turnout-tier", "?"),
                  headers.get("x-turnout-cache", "off"), time.perf_counter() - started)


async def run_load(url: str, prompts: list[str], concurrency: int, max_tokens: int) -> tuple[list[Result], float]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-load", max_retries=0, timeout=600)
    queue = list(enumerate(prompts))
    results: list[Result | None] = [None] * len(prompts)
    progress = tqdm(total=len(prompts), unit="req", desc="load")
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            index, prompt = queue.pop(0)
            results[index] = await ask(client, prompt, max_tokens, started)
            progress.update()
            progress.set_postfix(tokens=sum(r.tokens for r in results if r), refresh=False)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    progress.close()
    await client.close()
    return [r for r in results if r is not None], time.perf_counter() - started


def percentile_ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1e3:.0f}" if values else "—"


def report(results: list[Result], wall_s: float, args: argparse.Namespace) -> str:
    from bench.common import markdown_table

    ok = [r for r in results if r.error is None]
    generated = [r for r in ok if r.cache not in ("hit", "semantic-hit")]
    tokens = sum(r.tokens for r in generated)
    tiers = Counter(r.tier for r in generated)
    caches = Counter(r.cache for r in ok)
    hits = caches["hit"] + caches["semantic-hit"]
    tpots = [t for r in generated if (t := r.tpot_s) is not None]
    summary = [[len(results), args.concurrency, f"{wall_s:.0f}", f"{len(ok) / wall_s:.2f}", f"{tokens / wall_s:.1f}",
                percentile_ms([r.ttft_s for r in generated], 50), percentile_ms([r.ttft_s for r in generated], 95),
                percentile_ms(tpots, 50), percentile_ms(tpots, 95),
                ", ".join(f"{tier} {n / max(len(generated), 1):.0%}" for tier, n in sorted(tiers.items())),
                f"{hits / max(len(ok), 1):.0%}", len(results) - len(ok)]]
    header = ["requests", "conc.", "wall s", "req/s", "output tok/s", "TTFT p50 ms", "TTFT p95 ms",
              "TPOT p50 ms", "TPOT p95 ms", "routing split", "cache hit rate", "errors"]
    groups = [[group, len(rs), percentile_ms([r.ttft_s for r in rs], 50), percentile_ms([r.ttft_s for r in rs], 95),
               percentile_ms([t for r in rs if (t := r.tpot_s) is not None], 50)]
              for group, rs in grouped(ok).items()]
    return "\n".join([
        f"config {os.path.relpath(args.config, ROOT)}, {args.prompts} distinct ShareGPT prompts + "
        f"{len(results) - args.prompts} asked again ({len(results)} requests), max_tokens {args.max_tokens}, "
        f"machine {os.cpu_count()} cores (shared)", "",
        markdown_table(header, summary), "",
        markdown_table(["served by", "requests", "TTFT p50 ms", "TTFT p95 ms", "TPOT p50 ms"], groups), ""])


def grouped(results: list[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for result in results:
        key = "cache" if result.cache in ("hit", "semantic-hit") else f"{result.tier} tier"
        groups.setdefault(key, []).append(result)
    return dict(sorted(groups.items()))


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for group, rs in grouped([r for r in results if r.error is None]).items():
        ttfts = np.sort([r.ttft_s * 1e3 for r in rs])
        left.step(ttfts, np.arange(1, len(ttfts) + 1) / len(ttfts), where="post", label=f"{group} ({len(rs)})")
    left.set_xscale("log")
    left.set_xlabel("TTFT ms (log)")
    left.set_ylabel("share of requests")
    left.set_title("time to first token")
    left.legend(fontsize=8)
    done = sorted(results, key=lambda r: r.finished_at)
    times = [r.finished_at for r in done]
    right.plot(times, np.cumsum([r.tokens if r.cache not in ("hit", "semantic-hit") else 0 for r in done]))
    right.set_xlabel("seconds")
    right.set_ylabel("output tokens generated")
    right.set_title("cumulative output tokens")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "tiny.yaml")
    parser.add_argument("--prompts", type=int, default=48, help="distinct ShareGPT prompts")
    parser.add_argument("--repeat", type=float, default=0.25, help="share of prompts asked a second time")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--semantic", action="store_true", help="semantic cache on (loads the prompt encoder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "load")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    prompts = workload(args.prompts, args.repeat, args.seed)
    server: ServerProcess = turnout_server(effective_config(args.config, args.semantic, args.out), log_dir=args.out)
    print(f"starting turnout with {args.config} (loads the models; log: {args.out / 'turnout.log'})")
    with server.start(timeout_s=900):
        results, wall_s = asyncio.run(run_load(server.url, prompts, args.concurrency, args.max_tokens))
    text = report(results, wall_s, args)
    print(text)
    (args.out / "load.md").write_text(text)
    (args.out / "load.json").write_text(json.dumps([r.__dict__ for r in results]))
    plot(results, args.out / "load.png")


if __name__ == "__main__":
    main()
