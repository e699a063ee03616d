"""Exact cache hits through the whole gateway over HTTP: latency p50/p99 and hits/s.

turnout (cache on, embedded Redis, semantic off so no encoder runs) in front of the instant upstream;
one request primes the entry, then every request is an exact hit answered from Redis.

    .venv/bin/python -m bench.cache.http_hits [--requests 2000] [--concurrency 1 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import httpx

from bench.common import markdown_table
from bench.overhead.loadgen import BENCH_KEY, Target, run_batch
from bench.overhead.servers import turnout_server, upstream_server

CONFIG = """
server: {{host: 127.0.0.1}}
tiers:
  small:
    deployments: [{{kind: openai, model: instant-small, url: "{url}/v1"}}]
routing: {{router: none}}
cache: {{semantic_enabled: false}}
"""
BODY = json.dumps({"model": "small", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16,
                   "temperature": 0}).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(target: Target, levels: list[int], requests: int) -> list[list[object]]:
    rows = []
    for level in levels:
        await run_batch(target, target.request(BODY), concurrency=level, count=min(200, requests))  # warm
        batch = await run_batch(target, target.request(BODY), concurrency=level, count=requests)
        ms = [s * 1000 for s in batch.latencies]
        rows.append([level, len(ms), f"{percentile(ms, 0.5):.2f}", f"{percentile(ms, 0.99):.2f}",
                     f"{len(ms) / batch.wall_s:.0f}", batch.failures + sum(s != 200 for s in batch.statuses)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, upstream_server() as upstream:
        config = Path(tmp) / "turnout.yaml"
        config.write_text(CONFIG.format(url=upstream.url))
        with turnout_server(config) as turnout:
            first = httpx.post(turnout.url + "/v1/chat/completions", content=BODY,
                               headers={"authorization": f"Bearer {BENCH_KEY}", "content-type": "application/json"})
            again = httpx.post(turnout.url + "/v1/chat/completions", content=BODY,
                               headers={"authorization": f"Bearer {BENCH_KEY}", "content-type": "application/json"})
            if (first.headers.get("x-turnout-cache"), again.headers.get("x-turnout-cache")) != ("miss", "hit"):
                raise SystemExit(f"expected miss then hit, got {first.headers} / {again.headers}")
            rows = asyncio.run(measure(Target("turnout", "127.0.0.1", turnout.port), args.concurrency,
                                       args.requests))
    print(markdown_table(["concurrency", "hits", "p50 ms", "p99 ms", "hits/s", "errors"], rows))


if __name__ == "__main__":
    main()
