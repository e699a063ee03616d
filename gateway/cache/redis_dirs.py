"""Temporary data directories of embedded redis-servers (`$TMPDIR/turnout-redis-*`), and the sweep
that removes those whose gateway died without cleaning up (a `kill -9`, a power cut).

Each directory records its owner's pid in `owner.pid` when it is made and the redis-server's pid in
`redis.pid` when that starts. A later start removes every directory whose owner is dead, after
SIGKILLing its redis-server if one is still running from it (a gateway from before the parent-death
signal, or a platform without one). A directory without `owner.pid` (made by an older turnout) is
stale when its unix socket no longer answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from gateway.child_process import pid_alive

log = logging.getLogger(__name__)

PREFIX = "turnout-redis-"
OWNER_FILE = "owner.pid"
SERVER_FILE = "redis.pid"


def make_dir() -> Path:
    """A fresh temporary data directory owned by this process."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    return path


def record_server(path: Path, pid: int) -> None:
    (path / SERVER_FILE).write_text(str(pid))


def remove_stale_dirs(parent: Path | None = None) -> list[Path]:
    """Remove the data directories under `parent` (the temp dir) whose owner is dead; returns them."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(PREFIX + "*"):
        if path.is_dir() and _stale(path):
            _kill_server(path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d stale embedded-redis director%s: %s", len(removed), "y" if len(removed) == 1 else "ies",
                 ", ".join(map(str, removed)))
    return removed


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _stale(path: Path) -> bool:
    owner = _read_pid(path / OWNER_FILE)
    if owner is not None:
        return owner != os.getpid() and not pid_alive(owner)
    sock = path / "redis.sock"
    if not sock.exists():
        return False  # an older turnout's TCP server, or one still starting: nothing says it is dead
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(sock))
        except OSError:
            return True
    return False


def _kill_server(path: Path) -> None:
    """SIGKILL the redis-server still running from `path`, if its pid is still that server."""
    pid = _read_pid(path / SERVER_FILE)
    if pid is None or not pid_alive(pid):
        return
    with contextlib.suppress(OSError):
        if str(path) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            os.kill(pid, signal.SIGKILL)
