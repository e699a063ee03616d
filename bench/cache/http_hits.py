"""Exact cache hits through the whole gateway over HTTP: latency p50/p99, hits/s, and CPU per hit.

turnout (cache on, semantic off so no encoder runs) in front of the instant upstream; one request
primes the entry, then every request is an exact hit answered from Redis.

The load generator shares the 2 cores with the gateway, so it is named in the output: `wrk` (C, a few
µs of CPU per request) when it is installed, else the Python keep-alive client of bench/overhead (tens
of µs, taken from the gateway). CPU ms per hit (the gateway processes and Redis, from /proc) does not
depend on what else runs on the machine; hits/s does, so the load average is printed next to it.

`--replicas 2` runs two gateway processes on one Redis (an external redis-server, as a multi-replica
deployment has), each with half the connections: one Python process cannot use more than one core.

    .venv/bin/python -m bench.cache.http_hits [--requests 4000] [--concurrency 1 16 64] [--replicas 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import markdown_table
from bench.overhead.loadgen import BENCH_KEY, Target, run_batch
from bench.overhead.servers import ServerProcess, turnout_server, upstream_server
from gateway.cache.redis_server import RedisServerProcess

CONFIG = """
server: {{host: 127.0.0.1}}
tiers:
  small:
    deployments: [{{kind: openai, model: instant-small, url: "{url}/v1"}}]
routing: {{router: none}}
cache: {{semantic_enabled: false{redis}}}
"""
BODY = json.dumps({"model": "small", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16,
                   "temperature": 0}).encode()
HEADERS = {"authorization": f"Bearer {BENCH_KEY}", "content-type": "application/json"}
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


@dataclass
class Run:
    requests: int
    wall_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def python_client(targets: list[Target], concurrency: int, requests: int) -> Run:
    per = max(1, concurrency // len(targets))
    await asyncio.gather(*(run_batch(t, t.request(BODY), concurrency=per, count=min(200, requests)) for t in targets))
    batches = await asyncio.gather(*(run_batch(t, t.request(BODY), concurrency=per, count=requests // len(targets))
                                     for t in targets))
    ms = [s * 1000 for b in batches for s in b.latencies]
    errors = sum(b.failures + sum(s != 200 for s in b.statuses) for b in batches)
    return Run(len(ms), max(b.wall_s for b in batches), percentile(ms, 0.5), percentile(ms, 0.99), errors)


def wrk_client(targets: list[Target], concurrency: int, seconds: float, script: Path) -> Run:
    """One wrk per gateway process, run together; latencies merged as the worst of their percentiles."""
    per = max(1, concurrency // len(targets))
    argv = ["wrk", "-t1", f"-c{per}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    procs = [subprocess.Popen([*argv, f"http://{t.host}:{t.port}{t.path}"], stdout=subprocess.PIPE, text=True)
             for t in targets]
    outputs = [p.communicate()[0] for p in procs]
    runs = [_parse_wrk(out) for out in outputs]
    return Run(sum(r.requests for r in runs), max(r.wall_s for r in runs), max(r.p50_ms for r in runs),
               max(r.p99_ms for r in runs), sum(r.errors for r in runs))


def _parse_wrk(out: str) -> Run:
    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\b", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    done = re.search(r"(\d+) requests in ([\d.]+)s", out)
    assert done, out
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Run(int(done.group(1)), float(done.group(2)), ms("50%"), ms("99%"), errors)


def measure(servers: list[ServerProcess], redis: RedisServerProcess | None, client: str, levels: list[int],
            requests: int, seconds: float, script: Path) -> list[list[object]]:
    targets = [Target("turnout", "127.0.0.1", s.port) for s in servers]
    rows = []
    for level in levels:
        if client == "wrk":  # warm up the connections and the server, untimed
            wrk_client(targets, level, 1, script)
        before = _cpu(servers, redis)
        load = os.getloadavg()[0]
        if client == "wrk":
            run = wrk_client(targets, level, seconds, script)
        else:
            run = asyncio.run(python_client(targets, level, requests))
        gateway_s, redis_s = (after - first for after, first in zip(_cpu(servers, redis), before, strict=True))
        rows.append([client, len(servers), level, run.requests, f"{run.p50_ms:.2f}", f"{run.p99_ms:.2f}",
                     f"{run.requests / run.wall_s:.0f}", f"{1000 * gateway_s / run.requests:.3f}",
                     f"{1000 * redis_s / run.requests:.3f}", f"{load:.1f}", run.errors])
    return rows


def _cpu(servers: list[ServerProcess], redis: RedisServerProcess | None) -> tuple[float, float]:
    """CPU seconds so far of the gateway processes (without their children) and of Redis (embedded or not)."""
    gateway = sum(s.cpu_seconds() - _children_cpu(s.pid) for s in servers)
    redis_s = sum(_children_cpu(s.pid) for s in servers) + (_proc_cpu(redis.pid) if redis and redis.pid else 0.0)
    return gateway, redis_s


def _children_cpu(pid: int) -> float:
    """CPU of the direct children (the embedded redis-server) of `pid`."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += _proc_cpu(int(stat.parent.name))
    return total


def _proc_cpu(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


@contextlib.contextmanager
def gateways(tmp: Path, upstream_url: str,
             replicas: int) -> Iterator[tuple[list[ServerProcess], RedisServerProcess | None]]:
    """`replicas` gateway processes; more than one share an external redis-server (the embedded one is
    per process, so replicas would not share entries)."""
    with contextlib.ExitStack() as stack:
        redis = None
        redis_line = ""
        if replicas > 1:
            redis = stack.enter_context(RedisServerProcess())
            redis_line = f", redis_url: \"{redis.url}\""
        config = tmp / "turnout.yaml"
        config.write_text(CONFIG.format(url=upstream_url, redis=redis_line))
        servers = [stack.enter_context(turnout_server(config)) for _ in range(replicas)]
        yield servers, redis


def prime(servers: list[ServerProcess]) -> None:
    statuses = [httpx.post(s.url + "/v1/chat/completions", content=BODY, headers=HEADERS).headers.get("x-turnout-cache")
                for s in [servers[0], *servers]]
    if statuses != ["miss", *["hit"] * len(servers)]:
        raise SystemExit(f"expected a miss then hits, got {statuses}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000, help="per level, Python client")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level, wrk")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, upstream_server() as upstream:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(BODY.decode()), key=BENCH_KEY))
        with gateways(Path(tmp), upstream.url, args.replicas) as (servers, redis):
            prime(servers)
            rows = measure(servers, redis, args.client, args.concurrency, args.requests, args.seconds, script)
    print(markdown_table(["client", "gateway processes", "concurrency", "hits", "p50 ms", "p99 ms", "hits/s",
                          "gateway CPU ms/hit", "redis CPU ms/hit", "load avg (1 min)", "errors"], rows))


if __name__ == "__main__":
    main()
