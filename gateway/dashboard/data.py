"""The JSON behind /dashboard: totals since start read from the metrics registry, plus the timeline, and each
deployment's state now (the gateway's view beside its server's own metrics, from the same registry)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.dashboard.timeline import Timeline
from gateway.errors import is_client_error, is_failure
from gateway.metrics import Metrics
from gateway.upstream_metrics import GAUGES

CACHED = ("hit", "semantic-hit")


def dashboard_data(metrics: Metrics, timeline: Timeline) -> dict[str, Any]:
    registry = metrics.registry
    ok = _sum(registry, "turnout_requests_total", lambda labels: labels["status"] == "200", by="tier", cached=True)
    cache = _sum(registry, "turnout_cache_requests_total", by="result")
    lookups = sum(cache.values())
    cost = _total(registry, "turnout_cost_usd_total")
    baseline = _total(registry, "turnout_baseline_cost_usd_total")
    drafted = _total(registry, "turnout_spec_decode_num_draft_tokens_total")
    accepted = _total(registry, "turnout_spec_decode_num_accepted_tokens_total")
    prompt = _sum(registry, "turnout_tokens_total", by="type").get("prompt", 0.0)
    reused = _total(registry, "turnout_prompt_cached_tokens_total")
    buckets = _histogram(registry, "turnout_request_duration_seconds", lambda labels: labels["status"] == "200")
    by_status = _sum(registry, "turnout_requests_total", by="status")
    invalid = _total(registry, "turnout_invalid_requests_total")  # the schema's refusals: no status label
    failed = sum(count for status, count in by_status.items() if is_failure(int(status)))
    client_errors = invalid + sum(count for status, count in by_status.items() if is_client_error(int(status)))
    return {
        "now": time.time(),
        "bucket_s": timeline.bucket_s,
        "totals": {
            # requests = ok + failed + client_errors; "failed" is 5xx only (gateway.errors.is_failure)
            "requests": sum(by_status.values()) + invalid, "ok": sum(ok.values()),
            "failed": failed, "client_errors": client_errors,
            "small": ok.get("small", 0.0), "large": ok.get("large", 0.0), "cached": ok.get("cached", 0.0),
            "hit_rate": (cache.get("hit", 0.0) + cache.get("semantic_hit", 0.0)) / lookups if lookups else None,
            "cost_usd": cost, "baseline_usd": baseline, "savings_usd": baseline - cost,
            "priced": baseline > 0 or cost > 0,  # false without `pricing:`: savings show in tokens only
            "large_tokens_avoided": _total(registry, "turnout_large_tokens_avoided_total"),
            "acceptance": accepted / drafted if drafted else None,
            "prompt_reuse": reused / prompt if prompt else None,  # prompt tokens from a prefix cache
            "p50_s": histogram_quantile(0.50, buckets), "p95_s": histogram_quantile(0.95, buckets),
        },
        "series": timeline.series(),
        "deployments": deployments(registry),
    }


def deployments(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """One row per deployment: `turnout_deployment_*` (up, in flight, breaker), and under `upstream` its
    server's metrics (`turnout_upstream_*`: `up` False when stale; absent values are null), or None when
    they are not scraped. `tiers`: the tiers it serves, as far as the scraped metrics tell."""
    rows: dict[str, dict[str, Any]] = {}
    for labels, value in _samples(registry, "turnout_deployment_up"):
        rows[labels["deployment"]] = {"name": labels["deployment"], "model": labels["model"], "up": value == 1,
                                      "tiers": [], "upstream": None}
    for key, name in (("outstanding", "turnout_deployment_outstanding_requests"),
                      ("breaker_open", "turnout_deployment_breaker_open")):
        for labels, value in _samples(registry, name):
            rows[labels["deployment"]][key] = value if key == "outstanding" else value == 1
    for labels, value in _samples(registry, "turnout_upstream_metrics_up"):
        row = rows[labels["deployment"]]
        row["tiers"].append(labels["tier"])
        row["upstream"] = {"up": value == 1, **{field: None for field, _, _ in GAUGES}}
    for field, name, _ in GAUGES:
        for labels, value in _samples(registry, name):
            rows[labels["deployment"]]["upstream"][field] = value
    return list(rows.values())


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the q-th observation.
    `buckets` are (upper bound, cumulative count), ascending, ending with +Inf."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count or 1)
        lower_bound, lower_count = bound, count
    return lower_bound


def _samples(registry: CollectorRegistry, name: str) -> Iterator[tuple[dict[str, str], float]]:
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels, sample.value


def _total(registry: CollectorRegistry, name: str) -> float:
    return sum(value for _, value in _samples(registry, name))


def _sum(registry: CollectorRegistry, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True, *,
         by: str, cached: bool = False) -> dict[str, float]:
    """Sum of the samples matching `where`, by one label; with `cached`, cache hits are summed apart."""
    totals: dict[str, float] = defaultdict(float)
    for labels, value in _samples(registry, name):
        if where(labels):
            totals["cached" if cached and labels.get("cache") in CACHED else labels[by]] += value
    return dict(totals)


def _histogram(registry: CollectorRegistry, name: str,
               where: Callable[[dict[str, str]], bool]) -> list[tuple[float, float]]:
    cumulative: dict[float, float] = defaultdict(float)
    for labels, value in _samples(registry, name + "_bucket"):
        if where(labels):
            cumulative[float(labels["le"])] += value
    return sorted(cumulative.items())
