"""`turnout router train|eval --data redis://HOST:PORT[/DB]?tenant=T`: a tenant's shadow outcomes, read back
from the redis sink (gateway/shadow_sink.py) in XRANGE pages, oldest first.

router_models' CLI reads files only (it may not import the gateway, which knows where a tenant's stream
is); `register`, mounted after it by gateway/cli.py, hands it `read_stream` for these URLs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.exceptions import RedisError

from gateway.cache.keys import TenantKeys
from gateway.router_label import router_actions
from gateway.shadow_sink import RECORD_FIELD
from router_models.cli import accept_outcome_urls
from router_models.data import OutcomeRecords, shown_url

PAGE = 1000  # stream entries per XRANGE
READ_TIMEOUT_S = 10.0


TENANT_HINT = ("the gateway's tenant name, as the jsonl sink names its files: tenant-<key's tenant> with auth on, "
               "key-<hash> per bearer token without, anonymous")


def read_stream(url: str) -> OutcomeRecords:
    """Every record of the stream `url`'s `tenant` names, oldest first; a ValueError says what is wrong
    (no tenant, Redis unreachable, no such stream, an empty one, an entry that is not a record)."""
    shown = shown_url(url)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    tenants = [value for name, value in query if name == "tenant"]
    if len(tenants) != 1 or not tenants[0]:
        raise ValueError(f"{shown}: say whose shadow records to read with one ?tenant=T ({TENANT_HINT})")
    tenant = tenants[0]
    key = TenantKeys.for_tenant(tenant).shadow
    server = urlunsplit(parts._replace(query=urlencode([(n, v) for n, v in query if n != "tenant"])))
    try:
        client = redis.Redis.from_url(server, socket_timeout=READ_TIMEOUT_S, socket_connect_timeout=READ_TIMEOUT_S)
    except ValueError as exc:
        raise ValueError(f"{shown}: not a Redis URL ({exc})") from None
    try:
        with client:
            kind = cast(bytes, client.type(key))
            if kind == b"none":
                raise ValueError(f"{shown}: no shadow records for tenant {tenant!r} (no stream {key}; "
                                 f"the tenant is {TENANT_HINT})")
            if kind != b"stream":
                raise ValueError(f"{shown}: {key} holds a {kind.decode()}, not a shadow stream")
            rows = [_record(entry_id, fields, shown) for entry_id, fields in _entries(client, key)]
    except RedisError as exc:
        raise ValueError(f"{shown}: cannot read from redis ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise ValueError(f"{shown}: the shadow stream of tenant {tenant!r} is empty")
    return OutcomeRecords(source=shown, name=tenant, rows=rows)


def _entries(client: redis.Redis, key: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    start = "-"
    while True:
        page = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key, min=start, max="+", count=PAGE))
        yield from page
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0].decode()


def _record(entry_id: bytes, fields: dict[bytes, bytes], shown: str) -> dict[str, Any]:
    try:
        row = json.loads(fields[RECORD_FIELD.encode()])
    except (KeyError, ValueError):
        row = None
    if not isinstance(row, dict):
        raise ValueError(f"{shown}: entry {entry_id.decode()} is not a shadow record "
                         f"(a JSON object in its {RECORD_FIELD!r} field)")
    return row


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`router train` and `router eval` read `--data redis://...?tenant=T` (also rediss://, unix://)."""
    accept_outcome_urls(router_actions(commands), dict.fromkeys(("redis", "rediss", "unix"), read_stream))
