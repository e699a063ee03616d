"""Share the CPU's cores among the engines that have work: an engine busy alone gets all of them.

On the 2-core CPU this was built on, one sequence of the 1.5B model prefills 1.9x and decodes 1.3-1.7x
faster on two torch threads than on one; but a two-thread step runs up to 10x slower while another busy
thread holds a core (each layer's OpenMP threads wait at a barrier for the descheduled one), and the
default gateway runs two engines (small and large) in one process. So each engine asks before every
step: cores // engines with work (a semantic-cache judge's forward pass counts as one while it runs).
Logits do not depend on the thread count (checked bitwise for the packed layout), so a request's output
does not depend on whether the other engine was busy.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. a container's cpuset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class CpuShare:
    def __init__(self, cores: int | None = None):
        self.cores = cores or available_cores()
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def busy(self, owner: object) -> None:
        """`owner` has work (idempotent: an engine's loop marks itself busy before every step)."""
        with self._lock:
            self._busy.add(id(owner))

    def idle(self, owner: object) -> None:
        with self._lock:
            self._busy.discard(id(owner))

    @contextmanager
    def working(self) -> Iterator[int]:
        """Busy for one block of work (e.g. a cache judge's forward pass); yields its thread count. Each
        block counts on its own, so two threads embedding through one model at once count as two."""
        block = object()  # alive, so its id is unique, until the block ends
        self.busy(block)
        try:
            yield self.threads()
        finally:
            self.idle(block)

    @contextmanager
    def torch_threads(self, fixed: int | None = None) -> Iterator[None]:
        """`working`, with torch's thread count for the calling thread (it is per thread) set to the
        share, or to `fixed`."""
        import torch

        with self.working() as share:
            torch.set_num_threads(fixed or share)
            yield

    def threads(self) -> int:
        """Threads for a step of one busy engine now."""
        with self._lock:
            return max(1, self.cores // max(1, len(self._busy)))


CPU_SHARE = CpuShare()  # process-wide: every engine in the process shares the same cores
