"""bench/soak: does turnout's memory stay flat over many mixed requests?

10,000 requests (default) through `turnout serve` (cache on, embedded Redis) to the instant upstream,
16 at a time, in a fixed seeded mix:

    miss        a new prompt, not streamed          hit     one of 50 prompts seen before (either way)
    miss-sse    a new prompt, streamed              4xx     malformed JSON, a wrong type, an unknown model
    5xx         a deployment whose upstream fails (502)

The gateway process's RSS (without its redis-server child, reported apart) is sampled after every
chunk of requests. Goal: RSS growth at most 5% from the end of the warm-up (first 10%) to the end.

    .venv/bin/python -m bench.soak.run [--requests 10000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.overhead.loadgen import Target, run_requests
from bench.overhead.servers import ROOT, turnout_server, upstream_server

HERE = Path(__file__).resolve().parent
MIX = {"miss": 0.35, "miss-sse": 0.2, "hit": 0.3, "4xx": 0.1, "5xx": 0.05}
EXPECTED = {"miss": {200}, "miss-sse": {200}, "hit": {200}, "4xx": {400, 404}, "5xx": {502, 503}}
HOT_PROMPTS = 50
API_KEYS = [f"sk-soak-{i}" for i in range(5)]
GOAL_GROWTH = 0.05


@dataclass
class Sample:
    requests: int
    seconds: float
    gateway_rss: int
    redis_rss: int


def chat(content: str, *, stream: bool = False, model: str = "small") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0,
                       "stream": stream}).encode()


BAD_BODIES = [b'{"model": "small", "messages": [', b'{"model": "small", "messages": "hi"}',
              b'{"model": "small", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
              chat("who are you", model="no-such-model")]


def build_requests(target: Target, count: int, seed: int) -> tuple[list[bytes], list[str]]:
    """The whole run's requests and their kinds, the same for a given seed."""
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    requests = []
    for index, kind in enumerate(kinds):
        if kind in ("miss", "miss-sse"):
            body = chat(f"soak request {index}: tell me something new", stream=kind == "miss-sse")
        elif kind == "hit":
            body = chat(f"a popular question #{rng.randrange(HOT_PROMPTS)}", stream=rng.random() < 0.5)
        elif kind == "4xx":
            body = rng.choice(BAD_BODIES)
        else:
            body = chat(f"this one fails {index}", model="fail")
        requests.append(target.request(body, api_key=rng.choice(API_KEYS)))
    return requests, kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=250, help="requests between RSS samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "soak")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with upstream_server(args.out) as upstream, \
            turnout_server(HERE / "turnout.yaml", {"UPSTREAM_URL": upstream.url + "/v1"}, args.out) as turnout:
        target = Target("turnout", "127.0.0.1", turnout.port)
        requests, kinds = build_requests(target, args.requests, args.seed)
        samples, outcomes = uvloop.run(soak(turnout, target, requests, kinds, args))
    text = report(samples, outcomes, args)
    print(text)
    (args.out / "soak.md").write_text(text)
    (args.out / "soak.json").write_text(json.dumps([sample.__dict__ for sample in samples]))
    plot(samples, args.requests // 10, args.out / "soak.png")


async def soak(turnout, target: Target, requests: list[bytes], kinds: list[str],
               args: argparse.Namespace) -> tuple[list[Sample], Counter[tuple[str, str]]]:
    outcomes: Counter[tuple[str, str]] = Counter()
    started = time.perf_counter()
    samples = [Sample(0, 0.0, turnout.rss_bytes(children=False), turnout.rss_bytes() - turnout.rss_bytes(False))]
    for start in range(0, len(requests), args.chunk):
        chunk = slice(start, start + args.chunk)
        batch = await run_requests(target, requests[chunk], concurrency=args.concurrency)
        for kind, status in zip(kinds[chunk], batch.statuses, strict=True):
            outcomes[(kind, "expected" if status in EXPECTED[kind] else f"unexpected {status}")] += 1
        gateway = turnout.rss_bytes(children=False)
        samples.append(Sample(min(start + args.chunk, len(requests)), time.perf_counter() - started, gateway,
                              turnout.rss_bytes() - gateway))
        done = samples[-1].requests
        print(f"  {done:6d} requests  {done / samples[-1].seconds:6.0f} req/s  gateway RSS "
              f"{gateway / 2**20:6.1f} MiB  redis RSS {samples[-1].redis_rss / 2**20:6.1f} MiB", flush=True)
    return samples, outcomes


def report(samples: list[Sample], outcomes: Counter[tuple[str, str]], args: argparse.Namespace) -> str:
    from bench.common import markdown_table

    warm = next(sample for sample in samples if sample.requests >= args.requests // 10)
    last, peak = samples[-1], max(samples, key=lambda sample: sample.gateway_rss)
    growth = (last.gateway_rss - warm.gateway_rss) / warm.gateway_rss
    mib = 2**20
    rows = [["start", 0, f"{samples[0].gateway_rss / mib:.1f}", f"{samples[0].redis_rss / mib:.1f}"],
            ["after warm-up", warm.requests, f"{warm.gateway_rss / mib:.1f}", f"{warm.redis_rss / mib:.1f}"],
            ["peak", peak.requests, f"{peak.gateway_rss / mib:.1f}", f"{peak.redis_rss / mib:.1f}"],
            ["end", last.requests, f"{last.gateway_rss / mib:.1f}", f"{last.redis_rss / mib:.1f}"]]
    by_kind = [[kind, sum(n for (k, _), n in outcomes.items() if k == kind),
                ", ".join(f"{what}: {n}" for (k, what), n in sorted(outcomes.items()) if k == kind)]
               for kind in MIX]
    unexpected = sum(n for (_, what), n in outcomes.items() if what != "expected")
    verdict = "met" if growth <= GOAL_GROWTH else "MISSED"
    return "\n".join([
        f"{args.requests} requests, concurrency {args.concurrency}, {last.seconds:.0f} s "
        f"({args.requests / last.seconds:.0f} req/s), machine: {os.cpu_count()} cores (shared)", "",
        markdown_table(["point", "requests", "gateway RSS MiB", "redis-server RSS MiB"], rows), "",
        f"gateway RSS growth after warm-up: {growth:+.1%} (goal ≤ {GOAL_GROWTH:.0%}: {verdict})", "",
        markdown_table(["kind", "requests", "outcome"], by_kind), "",
        f"unexpected statuses: {unexpected}", ""])


def plot(samples: list[Sample], warm_up: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.2))
    done = [sample.requests for sample in samples]
    axis.plot(done, [sample.gateway_rss / 2**20 for sample in samples], label="turnout (gateway process)")
    axis.plot(done, [sample.redis_rss / 2**20 for sample in samples], label="embedded redis-server")
    axis.axvline(warm_up, color="grey", linestyle=":", label="end of warm-up")
    axis.set_xlabel("requests")
    axis.set_ylabel("RSS MiB")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)
    axis.set_title("soak: resident memory over 10k mixed requests")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
