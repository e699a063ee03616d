"""A small, fast HTTP/1.1 keep-alive load generator on raw asyncio streams.

Why not httpx: at 16-64 concurrent requests on two cores, a full-featured client spends more CPU per
request than the gateway under test, and that CPU is taken from the servers being measured. This one
sends prepared request bytes and parses only what it must (status, Content-Length or chunked framing),
so a request costs the client a few tens of microseconds. Latency is the time to the last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

# The bearer key every request carries; LiteLLM's master key is set to it (it refuses to run without one).
BENCH_KEY = "sk-bench-" + "0123456789abcdef" * 4


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    path: str = "/v1/chat/completions"

    def request(self, body: bytes, api_key: str = BENCH_KEY, path: str | None = None) -> bytes:
        head = (f"POST {path or self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        return head.encode() + body


@dataclass
class Batch:
    """What one batch measured: latencies (s) of the 200s, non-200 or failed requests, wall time."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    failures: int = 0
    wall_s: float = 0.0


class HTTPError(Exception):
    pass


class Connection:
    """One keep-alive connection; reopens itself when the server closes it."""

    def __init__(self, target: Target):
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> int:
        """Send one request, read the whole response; returns the status code."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.target.host, self.target.port)
        assert self._reader is not None
        self._writer.write(request)
        try:
            status, keep_alive = await _read_response(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError, HTTPError):
            await self.close()
            raise
        if not keep_alive:
            await self.close()
        return status

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise HTTPError(f"bad status line {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are sent by the servers measured
                break
            await reader.readexactly(size + 2)
    else:
        raise HTTPError("response has neither Content-Length nor chunked framing")
    return status, headers.get("connection") != "close"


async def run_batch(target: Target, request: bytes, *, concurrency: int, count: int) -> Batch:
    """`count` copies of one request over `concurrency` connections, each first warmed by one untimed
    request (so connection set-up is not measured)."""
    return await run_requests(target, [request] * count, concurrency=concurrency, warm_up=request)


async def run_requests(target: Target, requests: Sequence[bytes], *, concurrency: int,
                       warm_up: bytes | None = None) -> Batch:
    """Send `requests` in order over `concurrency` keep-alive connections; `Batch.statuses[i]` is the
    status of `requests[i]` (0: no response). Only 200s are in `latencies`."""
    connections = [Connection(target) for _ in range(concurrency)]
    batch = Batch(statuses=[0] * len(requests))
    try:
        if warm_up is not None:
            await asyncio.gather(*(connection.exchange(warm_up) for connection in connections))
        pending = iter(range(len(requests)))

        async def worker(connection: Connection) -> None:
            for index in pending:
                start = time.perf_counter()
                try:
                    batch.statuses[index] = status = await connection.exchange(requests[index])
                except (OSError, asyncio.IncompleteReadError, HTTPError):
                    batch.failures += 1
                    continue
                if status == 200:
                    batch.latencies.append(time.perf_counter() - start)
                else:
                    batch.failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(connection) for connection in connections))
        batch.wall_s = time.perf_counter() - started
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    return batch
