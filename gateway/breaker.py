"""A circuit breaker: stop paying for calls to something that keeps failing (a replica, Redis).

closed ──(N consecutive failures)──► open ──(cool-down elapsed)──► half-open: one probe call
   ▲                                   ▲                                │
   └────────── probe succeeded ────────┼────────────────────────────────┤
                                       └──────── probe failed ──────────┘

Checking (`allows`) and taking the probe slot (`begin`) are separate, so a balancer can rank
replicas without side effects and claim the probe only for the one it picked; `allow` does both for
callers that do not rank (the cache). A probe that never reports back goes stale after one more
cool-down, so it cannot wedge the breaker open. An outcome that says nothing about health (a 503 "busy",
a cancelled call) only frees the probe slot (`release`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._probe_started = 0.0
        self.times_opened = 0

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._probing or self._cooled_down() else "open"

    def allows(self) -> bool:
        """Would a call be let through now? (No side effect.)"""
        if self._opened_at is None:
            return True
        stale_probe = self._probing and self._clock() - self._probe_started >= self.cooldown_s
        return self._cooled_down() and (not self._probing or stale_probe)

    def begin(self) -> None:
        """A call is being made: when open and cooled down, it becomes the one probe."""
        if self._opened_at is not None:
            self._probing = True
            self._probe_started = self._clock()

    def allow(self) -> bool:
        """`allows`, and if so `begin`: check and claim in one step."""
        if not self.allows():
            return False
        self.begin()
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            if self._opened_at is None:
                self.times_opened += 1
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """The call ended without telling anything about health."""
        self._probing = False

    def _cooled_down(self) -> bool:
        return self._opened_at is not None and self._clock() - self._opened_at >= self.cooldown_s
