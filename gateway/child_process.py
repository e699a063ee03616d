"""Child processes that die with their parent, even when the parent is killed with SIGKILL.

A `kill -9` of the gateway runs no cleanup, so a server it started (the embedded redis-server)
would be re-parented to PID 1 and live on. On Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)` asks the
kernel to kill the child when its parent goes; it is set between fork and exec (`preexec_fn`).
The kernel watches the *thread* that forked, not the process: spawn from a thread that lives as long
as the child should (the main thread, or one the owner keeps), never from a pool thread that may
exit. Elsewhere (macOS) it is a no-op and the stale-directory sweep is the only cleanup.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen` that makes the child die with its parent; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:  # runs in the forked child: resolved above, so no lookup or lock here
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


def pid_alive(pid: int) -> bool:
    """True while `pid` names a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: kill(0) said it exists
