"""`turnout keys create|list|revoke`: API keys in the gateway's Redis, or config entries to paste.

Where keys live follows the config (`--config`, $TURNOUT_CONFIG, or the built-in one): with
`auth.keys_from: redis` they are written to `auth.redis_url`, else the cache's `redis_url`, else the
embedded redis-server's socket in `cache.embedded.data_dir` (started for the command if the gateway is
not running, which needs `persistence: true` so the key outlives it). `--redis-url` overrides all that.
With `keys_from: config`, `create` prints the entry to add under `auth.keys` (the secret's hash only).
The secret itself is printed once, by `create`, and never stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import redis as sync_redis
from redis.asyncio import Redis

from gateway.auth import RedisKeyRing, describe, key_snippet, new_key, tenant_of
from gateway.cache.redis_server import RedisServerProcess
from gateway.config import TIERS, ApiKeyConfig, ConfigError, TurnoutConfig, load_config

CONFIG_ENV = "TURNOUT_CONFIG"
T = TypeVar("T")


class KeysError(Exception):
    """A problem worth one line on stderr and exit status 1."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help=f"turnout.yaml (default: ${CONFIG_ENV}, else built-in)")
    common.add_argument("--redis-url", metavar="URL", help="the Redis holding the keys (overrides the config)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    create = actions.add_parser("create", parents=[common], help="make a key; prints its secret once")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--tenant", help="cache namespace shared with other keys (default: the key's id)")
    create.add_argument("--tier", action="append", choices=TIERS, dest="tiers", help="allowed tier (repeatable)")
    create.add_argument("--requests", type=int, metavar="N", help="requests per limits window")
    create.add_argument("--tokens", type=int, metavar="N", help="tokens per limits window")
    create.add_argument("--admin", action="store_true", help="may read every key's usage")
    create.set_defaults(func=create_key)

    listing = actions.add_parser("list", parents=[common], help="show keys (hashed: only a prefix of each)")
    listing.set_defaults(func=list_keys)

    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key by id (effective at once)")
    revoke.add_argument("key_id", metavar="ID")
    revoke.set_defaults(func=revoke_key)


def create_key(args: argparse.Namespace) -> int:
    secret, key = new_key(args.name, tenant=args.tenant, tiers=args.tiers, requests=args.requests,
                          tokens=args.tokens, admin=args.admin)
    return _run(args, lambda ring: ring.add(key), lambda _: _print_created(args, secret, key, stored=True),
                config_only=lambda _: _print_created(args, secret, key, stored=False))


def list_keys(args: argparse.Namespace) -> int:
    return _run(args, lambda ring: ring.all(), lambda keys: _print_keys(args, keys),
                config_only=lambda config: _print_keys(args, config.auth.keys))


def revoke_key(args: argparse.Namespace) -> int:
    def revoked(key: ApiKeyConfig | None) -> int:
        if key is None:
            raise KeysError(f"no key with id {args.key_id}")
        print(json.dumps(describe(key)) if args.json else f"revoked {key.id} ({key.prefix}…)")
        return 0

    def in_config(config: TurnoutConfig) -> int:
        if not any(key.id == args.key_id for key in config.auth.keys):
            raise KeysError(f"no key with id {args.key_id} in auth.keys")
        print(f"auth.keys_from is config: set `revoked: true` on key {args.key_id} in the config file and "
              "restart the gateway (or delete the entry)")
        return 0

    return _run(args, lambda ring: ring.revoke(args.key_id), revoked, config_only=in_config)


# --- where the keys are ----------------------------------------------------------------------------

def _run(args: argparse.Namespace, action: Callable[[RedisKeyRing], Awaitable[T]], report: Callable[[T], int], *,
         config_only: Callable[[TurnoutConfig], int]) -> int:
    """Load the config, then either `config_only(config)` or `report(await action(RedisKeyRing))`."""
    try:
        config = None if args.redis_url else load_config(args.config or os.environ.get(CONFIG_ENV) or None,
                                                          os.environ)
        if config is not None and config.auth.keys_from == "config":
            return config_only(config)
        with _redis_url(args.redis_url, config) as url:
            return report(asyncio.run(_with_ring(url, action)))
    except (ConfigError, KeysError) as error:
        print(f"turnout: {error}", file=sys.stderr)
        return 1


async def _with_ring(url: str, action: Callable[[RedisKeyRing], Awaitable[T]]) -> T:
    client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return await action(RedisKeyRing(client))
    except (sync_redis.RedisError, OSError) as error:
        raise KeysError(f"cannot use redis at {url}: {error}") from None
    finally:
        await client.aclose()


@contextlib.contextmanager
def _redis_url(url: str | None, config: TurnoutConfig | None) -> Iterator[str]:
    """The Redis to use; the embedded one is started for the command if the gateway is not running."""
    if url is not None:
        yield url
        return
    assert config is not None
    cache = config.cache if config.cache is not None and config.cache.enabled else None
    url = config.auth.redis_url or (cache.redis_url if cache else None)
    if url is not None:
        yield url
        return
    if cache is None or not cache.embedded.data_dir or not cache.embedded.unix_socket:
        raise KeysError("keys_from is redis but there is no redis_url and no embedded Redis with "
                        "cache.embedded.data_dir (and unix_socket) to reach: pass --redis-url")
    server = RedisServerProcess(cache.embedded)
    if _answers(server.url):
        yield server.url
        return
    if not cache.embedded.persistence:
        raise KeysError("the embedded Redis is not running and does not persist (cache.embedded.persistence: "
                        "false): start the gateway first, or enable persistence")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()  # a clean shutdown saves the snapshot the gateway loads on start


def _answers(url: str) -> bool:
    client = sync_redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (sync_redis.RedisError, OSError):
        return False
    finally:
        client.close()


# --- output ----------------------------------------------------------------------------------------

def _print_created(args: argparse.Namespace, secret: str, key: ApiKeyConfig, *, stored: bool) -> int:
    if args.json:
        print(json.dumps({**describe(key), "secret": secret, "stored": stored,
                          **({} if stored else {"config": key.model_dump(exclude_none=True)})}))
        return 0
    print(f"created key {key.id} ({key.name or 'unnamed'}, tenant {tenant_of(key)})")
    print(f"secret (shown once, store it now): {secret}")
    if not stored:
        print("\nauth.keys_from is config: add this entry under auth.keys and restart the gateway:\n")
        print(key_snippet(key))
    return 0


def _print_keys(args: argparse.Namespace, keys: list[ApiKeyConfig]) -> int:
    rows = [describe(key) for key in keys]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no keys")
        return 0
    header = ("ID", "NAME", "KEY", "TENANT", "TIERS", "LIMITS", "STATUS", "CREATED")
    table = [header] + [(row["id"], row["name"], row["prefix"], row["tenant"], ",".join(row["tiers"] or ["all"]),
                         _limits(row["limits"]), "revoked" if row["revoked"] else "active", row["created"] or "")
                        for row in rows]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def _limits(limits: dict[str, Any] | None) -> str:
    if not limits:
        return "default"
    return ", ".join(f"{value} {name}" for name, value in limits.items() if value is not None) or "default"
