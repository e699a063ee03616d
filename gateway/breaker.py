"""A per-deployment circuit breaker: stop sending requests to a replica that keeps failing.

closed ──(N consecutive failures)──► open ──(cool-down elapsed)──► half-open: one probe request
   ▲                                   ▲                                │
   └────────── probe succeeded ────────┼────────────────────────────────┤
                                       └──────── probe failed ──────────┘

Checking (`allows`) and taking the probe slot (`begin`) are separate, so a balancer can rank
replicas without side effects and claim the probe only for the one it picked. An outcome that says
nothing about the replica's health (a 503 "busy") only frees the probe slot.
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

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._probing or self._cooled_down() else "open"

    def allows(self) -> bool:
        """Would a request be let through now? (No side effect.)"""
        return self._opened_at is None or (self._cooled_down() and not self._probing)

    def begin(self) -> None:
        """A request is being sent: when open and cooled down, it becomes the one probe."""
        if self._opened_at is not None:
            self._probing = True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """The request ended without telling us anything about the replica's health."""
        self._probing = False

    def _cooled_down(self) -> bool:
        return self._opened_at is not None and self._clock() - self._opened_at >= self.cooldown_s
