"""bench/overhead: latency a gateway adds in front of an upstream that answers instantly.

Targets, each its own process: the instant upstream itself (`direct`), turnout (`turnout serve`, no
cache, tier forced by `model: small`, router off — the run checks that no prompt encoder is loaded),
and LiteLLM proxy (from bench/.venv-litellm: bench/overhead/install_litellm.sh). For every mode
(non-stream, stream) and concurrency, rounds rotate through the targets batch by batch, so load from
other tenants of the machine drifts over all of them alike. Latency is the time to the last byte;
"added" is a target's percentile minus the direct one's. CPU ms/request is the gateway process
tree's user+system time per request: less sensitive to a shared machine than latency.

    .venv/bin/python -m bench.overhead.run [--concurrency 1 16 64] [--requests 400] [--rounds 4]

`--baseline-code DIR` adds `turnout-baseline`: the same config served by another checkout's code (e.g.
`git worktree add /tmp/old <commit>`), so a refactor is measured against the code before it, side by
side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import uvloop

from bench.overhead.loadgen import BENCH_KEY, Batch, Target, run_batch
from bench.overhead.servers import ROOT, ServerProcess, litellm_server, turnout_server, upstream_server

HERE = Path(__file__).resolve().parent
MODES = {"non-stream": False, "stream": True}
PERCENTILES = (50, 95, 99)


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    failures: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, batch: Batch, cpu_s: float) -> None:
        self.latencies += batch.latencies
        self.requests += len(batch.latencies)
        self.failures += batch.failures
        self.wall_s += batch.wall_s
        self.cpu_s += cpu_s

    def percentiles_ms(self) -> list[float]:
        return [float(v) * 1e3 for v in np.percentile(self.latencies, PERCENTILES)]


def cpu_seconds(server: ServerProcess | None) -> float:
    return 0.0 if server is None else server.cpu_seconds()  # None: the upstream measured directly


def chat_body(stream: bool) -> bytes:
    return json.dumps({"model": "small", "messages": [{"role": "user", "content": "Say hello."}],
                       "max_tokens": 16, "stream": stream}).encode()


def check_no_encoder(turnout: ServerProcess) -> None:
    """The measured path must not embed: turnout loads its prompt encoder only when something needs it."""
    dependencies = httpx.get(turnout.url + "/ready", timeout=5).json()["dependencies"]
    if "encoder" in dependencies:
        raise SystemExit(f"turnout loaded a prompt encoder for this config: {dependencies}")


async def measure(targets: dict[str, tuple[Target, ServerProcess | None]], concurrency: list[int],
                  requests: int, rounds: int) -> dict[tuple[str, int, str], Samples]:
    results: dict[tuple[str, int, str], Samples] = defaultdict(Samples)
    names = list(targets)
    for mode, stream in MODES.items():
        body = chat_body(stream)
        for level in concurrency:
            for round_index in range(rounds):
                order = names[round_index % len(names):] + names[:round_index % len(names)]
                for name in order:
                    target, server = targets[name]
                    before = cpu_seconds(server)
                    batch = await run_batch(target, target.request(body), concurrency=level, count=requests)
                    results[(mode, level, name)].add(batch, cpu_seconds(server) - before)
                    print(f"  {mode:10} c={level:<3} round {round_index + 1}/{rounds} {name:8} "
                          f"{len(batch.latencies) / batch.wall_s:8.0f} req/s  failures {batch.failures}", flush=True)
    return results


def report(results: dict[tuple[str, int, str], Samples], names: list[str], rss: dict[str, tuple[int, int]],
           concurrency: list[int]) -> str:
    from bench.common import markdown_table

    lines = []
    for mode in MODES:
        rows = []
        for level in concurrency:
            direct = results[(mode, level, "direct")].percentiles_ms()
            for name in names:
                samples = results[(mode, level, name)]
                own = samples.percentiles_ms()
                added = ["—" if name == "direct" else f"{o - d:.2f}" for o, d in zip(own, direct, strict=True)]
                cpu = "—" if name == "direct" else f"{samples.cpu_s / max(samples.requests, 1) * 1e3:.2f}"
                rows.append([level, name, *(f"{v:.2f}" for v in own), *added,
                             f"{samples.requests / samples.wall_s:.0f}", cpu, samples.failures])
        header = ["conc.", "target", "p50 ms", "p95 ms", "p99 ms", "added p50", "added p95", "added p99",
                  "req/s", "CPU ms/req", "failed"]
        lines += [f"### {mode}", "", markdown_table(header, rows), ""]
    if "turnout" in names and "litellm" in names:
        rows = []
        for mode in MODES:
            for level in concurrency:
                direct = results[(mode, level, "direct")].percentiles_ms()
                ratios = []
                for index in range(len(PERCENTILES)):
                    turnout = results[(mode, level, "turnout")].percentiles_ms()[index] - direct[index]
                    litellm = results[(mode, level, "litellm")].percentiles_ms()[index] - direct[index]
                    ratios.append(f"{litellm / turnout:.1f}×" if turnout > 0 else "∞")
                rows.append([mode, level, *ratios])
        lines += ["### LiteLLM added latency ÷ turnout added latency", "",
                  markdown_table(["mode", "conc.", "p50", "p95", "p99"], rows), ""]
    rss_rows = [[name, f"{idle / 2**20:.0f}", f"{peak / 2**20:.0f}"] for name, (idle, peak) in rss.items()]
    lines += ["### resident memory (process tree)", "",
              markdown_table(["process", "RSS after start MiB", "RSS after run MiB"], rss_rows), ""]
    return "\n".join(lines)


def plot(results: dict[tuple[str, int, str], Samples], names: list[str], concurrency: list[int],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gateways = [name for name in names if name != "direct"]
    figure, axes = plt.subplots(1, len(MODES), figsize=(10, 3.8), sharey=True)
    width = 0.8 / len(gateways)
    for axis, mode in zip(axes, MODES, strict=True):
        for index, name in enumerate(gateways):
            added = [results[(mode, level, name)].percentiles_ms()[0]
                     - results[(mode, level, "direct")].percentiles_ms()[0] for level in concurrency]
            positions = [i + index * width for i in range(len(concurrency))]
            bars = axis.bar(positions, added, width, label=name)
            axis.bar_label(bars, fmt="%.1f", fontsize=8)
        axis.set_xticks([i + width * (len(gateways) - 1) / 2 for i in range(len(concurrency))],
                        [f"c={level}" for level in concurrency])
        axis.set_yscale("log")
        axis.set_title(f"added p50 latency, {mode}")
    axes[0].set_ylabel("ms (log scale)")
    axes[0].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests", type=int, default=400, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=4, help="batches per target, interleaved")
    parser.add_argument("--targets", nargs="+", default=["direct", "turnout", "litellm"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "overhead")
    parser.add_argument("--baseline-code", type=Path, help="a checkout whose turnout runs as turnout-baseline")
    args = parser.parse_args()
    if args.baseline_code is not None:
        args.targets.append("turnout-baseline")
    args.out.mkdir(parents=True, exist_ok=True)

    servers: list[ServerProcess] = []
    try:
        upstream = upstream_server(args.out).start()
        servers.append(upstream)
        env = {"UPSTREAM_URL": upstream.url + "/v1", "LITELLM_MASTER_KEY": BENCH_KEY}
        targets: dict[str, tuple[Target, ServerProcess | None]] = {}
        for name in args.targets:
            if name == "direct":
                targets[name] = (Target(name, "127.0.0.1", upstream.port), None)
                continue
            if name == "litellm":
                server = litellm_server(HERE / "litellm.yaml", env, args.out)
            else:
                code = args.baseline_code.resolve() if name == "turnout-baseline" else ROOT
                server = turnout_server(HERE / "turnout.yaml", env, args.out, code=code, name=name)
            server.start()
            servers.append(server)
            targets[name] = (Target(name, "127.0.0.1", server.port), server)
            if name.startswith("turnout"):
                check_no_encoder(server)
        rss_start = {name: server.rss_bytes() for name, (_, server) in targets.items() if server}
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()}")
        started = time.perf_counter()
        results = uvloop.run(measure(targets, args.concurrency, args.requests, args.rounds))
        rss = {name: (rss_start[name], server.rss_bytes()) for name, (_, server) in targets.items() if server}
        rss["upstream"] = (upstream.rss_bytes(), upstream.rss_bytes())
        names = list(targets)
        text = report(results, names, rss, args.concurrency)
        print(f"\n{text}\n({time.perf_counter() - started:.0f} s, load average after {os.getloadavg()})")
        (args.out / "overhead.md").write_text(text)
        raw = {f"{mode}|{level}|{name}": {"latencies_ms": [v * 1e3 for v in s.latencies], "wall_s": s.wall_s,
                                          "cpu_s": s.cpu_s, "failures": s.failures}
               for (mode, level, name), s in results.items()}
        (args.out / "overhead.json").write_text(json.dumps(raw))
        if len(names) > 1:
            plot(results, names, args.concurrency, args.out / "overhead.png")
    finally:
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    main()
