"""A ring buffer of per-interval samples for the dashboard's charts over time.

Prometheus counters only say "since start"; the dashboard needs "per minute" without a Prometheus
server. Each finished request adds itself to the current bucket; old buckets fall off the ring.
Latency percentiles per bucket come from a bounded reservoir of the bucket's durations.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import is_client_error, is_failure

RESERVOIR = 1024  # latencies kept per bucket: p95 of 1024 samples is within a percent or two


@dataclass(frozen=True)
class Sample:
    """What one finished request contributes to the charts."""

    tier: str | None
    cache: str | None  # hit, semantic-hit, miss, bypass; None without a cache step
    status: int  # the HTTP status it ended with (499: the client hung up)
    duration_s: float
    cost_usd: float = 0.0
    baseline_usd: float = 0.0
    draft_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def cached(self) -> bool:
        return self.cache in ("hit", "semantic-hit")


@dataclass
class Bucket:
    start: float
    requests: int = 0
    small: int = 0
    large: int = 0
    cached: int = 0
    cache_lookups: int = 0
    failed: int = 0  # 5xx: the gateway or a backend failed (gateway.errors.is_failure)
    client_errors: int = 0  # 4xx, 499 included
    cost_usd: float = 0.0
    baseline_usd: float = 0.0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    _timed: int = 0

    def add(self, sample: Sample, rng: random.Random) -> None:
        self.requests += 1
        if not sample.ok:
            self.failed += is_failure(sample.status)
            self.client_errors += is_client_error(sample.status)
            return
        if sample.cached:
            self.cached += 1
        elif sample.tier == "small":
            self.small += 1
        elif sample.tier == "large":
            self.large += 1
        self.cache_lookups += sample.cache is not None
        self.cost_usd += sample.cost_usd
        self.baseline_usd += sample.baseline_usd
        self.draft_tokens += sample.draft_tokens
        self.accepted_tokens += sample.accepted_tokens
        self._timed += 1
        if len(self.latencies) < RESERVOIR:
            self.latencies.append(sample.duration_s)
        elif (slot := rng.randrange(self._timed)) < RESERVOIR:
            self.latencies[slot] = sample.duration_s

    def point(self) -> dict[str, Any]:
        """The bucket as one chart point; rates and percentiles are None where there is nothing to measure."""
        latencies = sorted(self.latencies)
        return {
            "t": self.start, "requests": self.requests, "small": self.small, "large": self.large,
            "cached": self.cached, "failed": self.failed, "client_errors": self.client_errors,
            "hit_rate": _ratio(self.cached, self.cache_lookups),
            "cost_usd": self.cost_usd, "savings_usd": self.baseline_usd - self.cost_usd,
            "acceptance": _ratio(self.accepted_tokens, self.draft_tokens),
            "p50_s": percentile(latencies, 0.50), "p95_s": percentile(latencies, 0.95),
        }


class Timeline:
    def __init__(self, bucket_s: float, buckets: int, clock: Callable[[], float] = time.time):
        self.bucket_s = bucket_s
        self.clock = clock
        self._buckets: deque[Bucket] = deque(maxlen=buckets)
        self._rng = random.Random(0)

    def add(self, sample: Sample) -> None:
        self._current().add(sample, self._rng)

    def series(self) -> list[dict[str, Any]]:
        """Contiguous points from the oldest kept bucket to now (empty intervals included)."""
        if not self._buckets:
            return []
        self._current()
        return [bucket.point() for bucket in self._buckets]

    def _current(self) -> Bucket:
        start = math.floor(self.clock() / self.bucket_s) * self.bucket_s
        if self._buckets and self._buckets[-1].start == start:
            return self._buckets[-1]
        if self._buckets:  # empty intervals since the last request become empty points: the x axis is time
            gap = round((start - self._buckets[-1].start) / self.bucket_s)
            keep = (self._buckets.maxlen or gap) - 1
            for missing in range(max(1, gap - keep), gap):
                self._buckets.append(Bucket(start - (gap - missing) * self.bucket_s))
        bucket = Bucket(start)
        self._buckets.append(bucket)
        return bucket


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None
