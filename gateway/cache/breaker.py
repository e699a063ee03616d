"""Circuit breaker: after repeated Redis failures, stop paying a timeout on every request.

closed → (N consecutive failures) → open: calls are refused without touching Redis for a cool-down
→ half-open: one probe call is let through; its success closes the breaker, its failure reopens it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(
        self, failure_threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._probing else "open"

    def allow(self) -> bool:
        """May a call go to Redis now? Once the cool-down is over, one caller gets to probe; the
        cool-down restarts with it, so a probe that never reports back cannot wedge the breaker."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self.cooldown_s:
            return False
        self._opened_at = now
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            if self._opened_at is None:
                self.times_opened += 1
            self._opened_at = self._clock()
            self._probing = False
