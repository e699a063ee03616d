"""Where shadow labelling (gateway/shadow.py) keeps its outcomes: per-tenant JSONL files or Redis Streams.

Two sinks, one record shape (`{prompt, weak_quality, strong_quality, ...}`, what `router train` reads):

- a directory: `<dir>/<tenant>.jsonl`, one file per tenant;
- `redis`: one Redis Stream per tenant, `turnout:{<tenant hash>}:shadow` beside the tenant's cache keys
  (gateway/cache/keys.py: the tenant id itself never appears in Redis), each entry one JSON `record`,
  capped with `XADD MAXLEN ~ stream_maxlen`. It writes through the gateway's Redis for keys, limits and
  usage (gateway/state_store.py: auth.redis_url, else the cache's), under that connection's deadline and
  breaker; Redis down means this record is lost (`SinkUnavailable`, counted by the caller), never a
  delay to anyone.

`turnout router train|eval --data redis://HOST:PORT[/DB]?tenant=T` reads a tenant's stream back
(gateway/shadow_read.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Protocol

from gateway.cache.keys import TenantKeys
from gateway.config import ShadowConfig
from gateway.handle import Handle
from gateway.state_store import StateStore, StateUnavailable

RECORD_FIELD = "record"
"""The stream entry's one field: the outcome row as JSON (rows nest lists: judge verdicts, messages)."""


class SinkUnavailable(Exception):
    """This record could not be kept (the sink's Redis is down, slow or not connected yet)."""


class ShadowSink(Protocol):
    def ready(self) -> bool:
        """Can a record likely be kept now? Checked before the other tier and the judge are asked, so that
        a sink that is down costs no generation."""

    async def write(self, tenant: str, row: dict[str, Any]) -> None:
        """Keep `row` among `tenant`'s outcomes; raises SinkUnavailable when it cannot, now."""


def shadow_sink(config: ShadowConfig, state: Handle[StateStore]) -> ShadowSink:
    """The sink `routing.shadow.sink` names; `state` is the gateway's Redis, filled in once connected."""
    if config.sink == "redis":
        return RedisStreamSink(state, config.stream_maxlen)
    return JsonlSink(config.sink)


class JsonlSink:
    def __init__(self, directory: Path):
        self.directory = directory

    def ready(self) -> bool:
        return True

    async def write(self, tenant: str, row: dict[str, Any]) -> None:
        await asyncio.to_thread(_append, self.directory / f"{_file_name(tenant)}.jsonl", row)


class RedisStreamSink:
    def __init__(self, state: Handle[StateStore], maxlen: int):
        self.state = state
        self.maxlen = maxlen

    def ready(self) -> bool:
        store = self.state.get()
        return store is not None and store.accepting()

    async def write(self, tenant: str, row: dict[str, Any]) -> None:
        store = self.state.get()
        if store is None:
            raise SinkUnavailable("redis is not connected")
        key, record = TenantKeys.for_tenant(tenant).shadow, _json(row)
        try:
            await store.run("shadow", lambda client: client.xadd(key, {RECORD_FIELD: record}, maxlen=self.maxlen,
                                                                 approximate=True))
        except StateUnavailable as exc:
            raise SinkUnavailable(f"redis unavailable ({exc})") from exc


def _json(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


def _file_name(tenant: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tenant)


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(_json(row) + "\n")
