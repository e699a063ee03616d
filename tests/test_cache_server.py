"""EmbeddedRedis: the gateway's own redis-server starts, is restarted when it dies, and is cleaned up."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from gateway.cache import CacheConfig, EmbeddedRedis, EmbeddedRedisConfig, ResponseCache
from gateway.cache.redis_server import RedisServerProcess, RedisStartError
from gateway.types import BackendRequest, StreamEvent


async def test_embedded_redis_is_restarted_after_a_crash() -> None:
    embedded = EmbeddedRedis(EmbeddedRedisConfig(), check_interval_s=0.05)
    await embedded.start()
    data_dir = embedded.server.data_dir
    try:
        assert embedded.url.startswith("unix://")
        first_pid = embedded.server.pid
        embedded.server.kill()
        deadline = time.monotonic() + 10
        while embedded.restarts == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert embedded.restarts == 1 and embedded.server.pid != first_pid
        assert redis.Redis.from_url(embedded.url).ping()
    finally:
        await embedded.close()
    assert not embedded.server.alive() and not data_dir.exists()


def test_tcp_server_binds_loopback_on_a_free_port(tmp_path) -> None:
    with RedisServerProcess(EmbeddedRedisConfig(unix_socket=False), data_dir=tmp_path) as server:
        assert server.url.startswith("redis://127.0.0.1:") and server.port
        client = redis.Redis.from_url(server.url)
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.execute_command("VCARD", "no-such-set") == 0  # vector sets are built in
    assert not server.alive()


def test_a_server_that_cannot_start_says_why(tmp_path) -> None:
    server = RedisServerProcess(EmbeddedRedisConfig(maxmemory="not-a-size"), data_dir=tmp_path)
    with pytest.raises(RedisStartError, match="maxmemory"):
        server.start()


async def test_cache_open_without_url_runs_an_embedded_server() -> None:
    cache = await ResponseCache.open(CacheConfig())
    try:
        assert cache.embedded is not None and await cache.health()
        request = BackendRequest(kind="completion", model="m", prompt="1+1=", params={"temperature": 0})
        assert await cache.store("t", request, None, [StreamEvent(text="2", finish_reason="stop")])
        assert (await cache.lookup("t", request)).status == "hit"
    finally:
        await cache.close()
    assert not cache.embedded.server.alive()


async def test_disabled_cache_bypasses_everything() -> None:
    cache = await ResponseCache.open(CacheConfig(enabled=False))
    request = BackendRequest(kind="completion", model="m", prompt="x", params={"temperature": 0})
    assert (await cache.lookup("t", request)).reason == "disabled"
    assert not await cache.store("t", request, None, [StreamEvent(finish_reason="stop")])
    assert not await cache.health()
    await cache.close()
