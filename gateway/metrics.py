"""Prometheus metrics of one gateway app: `turnout_` prefix, base units (seconds, tokens, USD).

Each app owns a `Metrics` with its own `CollectorRegistry` (never the global default), so several
apps can live in one process (tests, `engine serve` next to a gateway). Code deep in the request path
that has no handle on the app (the serve step's fallbacks) calls the module functions
`record_fallback` / `record_backend_error`: they find the app's metrics through a context variable
that `MetricsContext` sets for every request, and do nothing outside a request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
                   20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
NONE = "none"  # label value where a request never got that far (no tier, no model)

_CACHE_ERROR_REASONS = frozenset({"unavailable", "breaker-open", "pool-exhausted", "redis-error", "internal-error",
                                  "error"})


class Metrics:
    """Every instrument of the gateway, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        route = ["kind", "tier", "model"]
        self.requests = Counter("turnout_requests", "Generation requests by outcome (HTTP status) and cache result",
                                [*route, "status", "cache"], registry=r)
        self.request_duration = Histogram("turnout_request_duration_seconds",
                                          "Request start to last byte of the response", [*route, "status"],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.time_to_first_token = Histogram("turnout_time_to_first_token_seconds",
                                             "Request start to the first generated text", route,
                                             buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("turnout_tokens", "Tokens processed by backends (cache hits excluded)",
                              ["tier", "model", "type"], registry=r)
        self.prompt_cached_tokens = Counter("turnout_prompt_cached_tokens", "Prompt tokens the backend took from "
                                            "its prefix cache instead of prefilling (usage.prompt_tokens_details."
                                            "cached_tokens)", ["tier", "model"], registry=r)
        self.router_decisions = Counter("turnout_router_decisions", "Routing decisions by tier and reason",
                                        ["tier", "reason"], registry=r)
        self.router_score = Histogram("turnout_router_score", "Router score, P(the large model is needed)",
                                      buckets=SCORE_BUCKETS, registry=r)
        self.cache_requests = Counter("turnout_cache_requests", "Requests through the cache step by result "
                                      "(hit, semantic_hit, miss, bypass)", ["result"], registry=r)
        spec = ["tier", "model"]
        self.spec_drafts = Counter("turnout_spec_decode_num_drafts", "Speculative drafts proposed", spec,
                                   registry=r)
        self.spec_draft_tokens = Counter("turnout_spec_decode_num_draft_tokens", "Draft tokens proposed", spec,
                                         registry=r)
        self.spec_accepted_tokens = Counter("turnout_spec_decode_num_accepted_tokens", "Draft tokens accepted",
                                            spec, registry=r)
        self.spec_accepted_per_position = Counter("turnout_spec_decode_num_accepted_tokens_per_pos",
                                                  "Draft tokens accepted at each draft position",
                                                  [*spec, "position"], registry=r)
        self.invalid_requests = Counter("turnout_invalid_requests", "API requests refused with 400 before routing "
                                        "(their body did not validate), by error code", ["code"], registry=r)
        self.backend_errors = Counter("turnout_backend_errors", "Backend failures by HTTP status",
                                      ["tier", "model", "status"], registry=r)
        self.fallbacks = Counter("turnout_fallbacks", "Requests moved to another tier after a failure",
                                 ["from_tier", "to_tier"], registry=r)
        self.cascade = Counter("turnout_cascade_decisions", "Small-tier answers judged by the cascade: kept, "
                               "escalated to the large tier, or unscored (the backend sent no logprobs)",
                               ["outcome"], registry=r)
        self.shadow = Counter("turnout_shadow_labels", "Shadow labelling (routing.shadow) by outcome: labelled, "
                              "dropped (queue full), sink-unavailable (judged, but its Redis could not keep the "
                              "record) or failed", ["outcome"], registry=r)
        self.rate_limited = Counter("turnout_rate_limit_rejections", "Requests refused with 429, by exhausted quota",
                                    ["limit"], registry=r)
        self.auth_failures = Counter("turnout_auth_failures", "Refused API keys by reason", ["reason"], registry=r)
        self.state_errors = Counter("turnout_state_store_errors", "Redis failures of keys, limits, usage and the "
                                    "redis shadow sink (all but keys fail open)", ["component"], registry=r)
        self.cost = Counter("turnout_cost_usd", "Estimated cost of served requests (pricing config)",
                            ["tier", "model"], registry=r)
        self.large_tokens_avoided = Counter("turnout_large_tokens_avoided", "Tokens of requests answered without "
                                            "the large tier (cache hits, the small tier): savings that need "
                                            "no prices", registry=r)
        self.baseline_cost = Counter("turnout_baseline_cost_usd", "Cost had every request, cache hits included, "
                                     "gone to the baseline (large) model", registry=r)

    def watch_cache(self, stats: Callable[[], Mapping[str, int] | None]) -> None:
        """Export the response cache's error counts, read from its live stats at scrape time."""
        self.registry.register(_CacheErrors(stats))

    def record_fallback(self, from_tier: str, to_tier: str) -> None:
        self.fallbacks.labels(from_tier, to_tier).inc()

    def record_cascade(self, outcome: str) -> None:
        self.cascade.labels(outcome).inc()

    def record_shadow(self, outcome: str) -> None:
        self.shadow.labels(outcome).inc()

    def record_backend_error(self, tier: str | None, model: str | None, status: int) -> None:
        self.backend_errors.labels(tier or NONE, model or NONE, str(status)).inc()


class _CacheErrors(Collector):
    """`turnout_cache_errors_total{step, reason}` from ResponseCache.stats ("exact:unavailable", "judge:error",
    …), and `turnout_cache_semantic_vetoes_total{reason}`: semantic candidates refused, by the check that
    refused them (a guard, the verifier, the judge)."""

    def __init__(self, stats: Callable[[], Mapping[str, int] | None]):
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = dict(self._stats() or {})  # one snapshot for both families
        family = CounterMetricFamily("turnout_cache_errors", "Cache calls that failed open (Redis down, slow, "
                                     "refusing, or a cache bug) by step and reason", labels=["step", "reason"])
        vetoes = CounterMetricFamily("turnout_cache_semantic_vetoes", "Semantic-cache candidates refused, by the "
                                     "check that refused them", labels=["reason"])
        for name, count in stats.items():
            step, _, reason = name.partition(":")
            if step == "vetoed":
                vetoes.add_metric([reason], count)
            elif reason in _CACHE_ERROR_REASONS:
                family.add_metric([step, reason], count)
            elif name in ("store-failed", "corrupt"):
                family.add_metric(["store" if name == "store-failed" else "read", name], count)
        yield family
        yield vetoes


# --- the current request's metrics ---------------------------------------------------------------

_current: ContextVar[Metrics | None] = ContextVar("turnout_metrics", default=None)


def current() -> Metrics | None:
    """The metrics of the app serving the current request; None outside a request."""
    return _current.get()


@contextlib.contextmanager
def using(metrics: Metrics) -> Iterator[Metrics]:
    """Make `metrics` the current ones for this block (and the tasks it starts)."""
    token = _current.set(metrics)
    try:
        yield metrics
    finally:
        _current.reset(token)


def record_fallback(from_tier: str, to_tier: str) -> None:
    """A request that failed on `from_tier` is retried on `to_tier` (called by the serve step)."""
    metrics = _current.get()
    if metrics is not None:
        metrics.record_fallback(from_tier, to_tier)


def record_cascade(outcome: str) -> None:
    """The cascade kept the small tier's answer, escalated it, or could not score it."""
    metrics = _current.get()
    if metrics is not None:
        metrics.record_cascade(outcome)


def record_shadow(outcome: str) -> None:
    """A shadow label was written, dropped, lost by its sink or failed."""
    metrics = _current.get()
    if metrics is not None:
        metrics.record_shadow(outcome)


def record_backend_error(tier: str | None, model: str | None, status: int) -> None:
    """A backend attempt failed with `status` (for attempts the client never sees, e.g. before a retry)."""
    metrics = _current.get()
    if metrics is not None:
        metrics.record_backend_error(tier, model, status)


class MetricsContext:
    """ASGI middleware: every request (and every task it starts) sees this app's metrics as `current()`."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with using(self.metrics):
            await self.app(scope, receive, send)
