"""`kill -9` of `turnout serve` takes its embedded redis-server with it (a parent-death signal), and
the next start removes the temporary directory the killed gateway left behind. Each gateway runs
with its own TMPDIR, so the sweep only ever sees this test's directories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TurnoutProcess, free_port

from gateway.cache import redis_dirs
from gateway.child_process import pid_alive

PATIENCE_S = 60.0  # a generous bound for the polls below: they return as soon as the condition holds


def _eventually(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {PATIENCE_S:g}s")
        time.sleep(0.05)


def _server_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob(redis_dirs.PREFIX + "*"))


def _gateway(tmp: Path, config: Path) -> TurnoutProcess:
    """A gateway with the embedded Redis and a remote backend nobody answers (no models to load)."""
    return TurnoutProcess("serve", "--config", str(config), env={"TMPDIR": str(tmp)})


def _started_redis_pid(tmp: Path, skip: set[Path]) -> tuple[Path, int]:
    found: list[tuple[Path, int]] = []

    def started() -> bool:
        for path in _server_dirs(tmp):
            pid_file, sock = path / redis_dirs.SERVER_FILE, path / "redis.sock"
            if path not in skip and pid_file.exists() and sock.exists():
                found.append((path, int(pid_file.read_text())))
                return True
        return False

    _eventually(started, "started an embedded redis-server")
    return found[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "turnout.yaml"
    path.write_text(f"""
tiers:
  small: {{deployments: [{{kind: openai, model: m, url: "http://127.0.0.1:{free_port()}/v1"}}]}}
routing: {{router: none}}
cache: {{semantic_enabled: false}}
""")
    return path


def test_kill_9_leaves_no_redis_and_the_next_start_sweeps_its_dir(tmp_path: Path, config: Path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    first = _gateway(tmp, config).start(ready_path="/health")
    try:
        killed_dir, redis_pid = _started_redis_pid(tmp, skip=set())
        assert pid_alive(redis_pid)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    finally:
        first.stop()
    _eventually(lambda: not pid_alive(redis_pid), "gone: the redis-server outlived its killed gateway")
    assert killed_dir.exists()  # nobody cleaned up after the kill

    second = _gateway(tmp, config).start(ready_path="/health")
    try:
        new_dir, _ = _started_redis_pid(tmp, skip={killed_dir})
        _eventually(lambda: not killed_dir.exists(), "removed: the stale directory")
        assert _server_dirs(tmp) == [new_dir]
    finally:
        second.stop()
    assert _server_dirs(tmp) == []  # a clean stop removes its own


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_the_sweep_removes_only_dirs_of_dead_owners(tmp_path: Path):
    def made(name: str, owner: int | None, socket_file: bool = False) -> Path:
        path = tmp_path / (redis_dirs.PREFIX + name)
        path.mkdir()
        if owner is not None:
            (path / redis_dirs.OWNER_FILE).write_text(str(owner))
        if socket_file:
            (path / "redis.sock").write_text("")  # a leftover file: nothing listens on it
        return path

    dead = made("dead", _dead_pid())
    alive = made("alive", os.getppid())
    legacy_dead = made("legacy-dead", None, socket_file=True)
    legacy_unknown = made("legacy-tcp", None)
    assert sorted(redis_dirs.remove_stale_dirs(tmp_path)) == sorted([dead, legacy_dead])
    assert alive.exists() and legacy_unknown.exists()
