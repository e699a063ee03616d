"""Real redis-server processes for tests: no fakes, so timeouts, restarts and vector sets are the real thing.

Each server gets a random free port on 127.0.0.1 (or a unix socket) and a temporary data directory,
and is killed at the end. Tests can crash (`kill()`), hang (`pause()`/`resume()`) and restart
(`start()`, same address) it mid-test. Use `running_redis()`, or the `redis_server` fixture: list
"redis_proc" in a conftest's `pytest_plugins`, or bind it in a test module
(`redis_server = redis_proc.redis_server`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cache.config import EmbeddedRedisConfig
from gateway.cache.redis_server import RedisServerProcess


@contextlib.contextmanager
def running_redis(data_dir: Path | None = None, *, unix_socket: bool = False) -> Iterator[RedisServerProcess]:
    """A started redis-server 8 (vector sets included); killed and cleaned up on exit."""
    server = RedisServerProcess(EmbeddedRedisConfig(unix_socket=unix_socket, maxmemory="256mb"),
                                data_dir=data_dir)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        server.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServerProcess]:
    """A fresh redis-server on a random free TCP port, for one test."""
    with running_redis(tmp_path / "redis") as server:
        yield server
