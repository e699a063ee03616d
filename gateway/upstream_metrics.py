"""What a deployment's server says about itself: vLLM's Prometheus `/metrics`, read into one snapshot.

Names are vLLM's (0.x, V0 and V1 engines): requests running and waiting, KV-cache usage (`kv_cache_usage_perc`,
earlier `gpu_cache_usage_perc`: a fraction despite the name), prefix-cache hits over queries (V1 counters,
earlier `gpu_`-prefixed; V0's `gpu_prefix_cache_hit_rate` gauge), speculative decoding's accepted over drafted
tokens (V1 counters; V0's `spec_decode_draft_acceptance_rate` gauge). Counts and counters are summed over
label sets (several engines behind one server), fractions averaged. Ratios of counters are since the server
started. A metric the server does not export is None; so is a ratio whose denominator is still 0.

Parsing is prometheus_client's own text parser; a body it cannot read raises ValueError.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class UpstreamValues:
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    prefix_cache_hit_ratio: float | None = None
    spec_decode_acceptance: float | None = None
    spec_decode_mean_acceptance_length: float | None = None  # vLLM's: 1 + accepted tokens per draft


@dataclass(frozen=True)
class UpstreamSnapshot:
    """The last scrape of one replica's metrics. `up` False: the scrape failed (stale; no values).
    `outstanding_at_scrape`: requests this gateway had in flight there when the answer came, so that
    load sent since can be added to the server's own counts."""

    up: bool
    values: UpstreamValues = UpstreamValues()
    outstanding_at_scrape: int = 0

    @property
    def queued(self) -> float | None:
        """Running + waiting at the scrape; None when stale or the server exports neither."""
        running, waiting = self.values.running, self.values.waiting
        if not self.up or (running is None and waiting is None):
            return None
        return (running or 0.0) + (waiting or 0.0)


# (field of UpstreamValues, exported gauge, help): the one list /metrics and the dashboard both read
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("running", "turnout_upstream_requests_running", "Requests the deployment's server is running "
     "(vllm:num_requests_running)"),
    ("waiting", "turnout_upstream_requests_waiting", "Requests waiting in the deployment's server queue "
     "(vllm:num_requests_waiting)"),
    ("kv_cache_usage", "turnout_upstream_kv_cache_usage", "Fraction of the server's KV cache in use "
     "(vllm:kv_cache_usage_perc)"),
    ("prefix_cache_hit_ratio", "turnout_upstream_prefix_cache_hit_ratio", "Prefix-cache hits over queries since "
     "the server started (vllm:prefix_cache_hits / queries)"),
    ("spec_decode_acceptance", "turnout_upstream_spec_decode_acceptance", "Draft tokens accepted over proposed "
     "since the server started (vllm:spec_decode_num_accepted_tokens / num_draft_tokens)"),
    ("spec_decode_mean_acceptance_length", "turnout_upstream_spec_decode_mean_acceptance_length", "1 + accepted "
     "tokens per draft since the server started (vLLM's mean acceptance length)"),
)
assert {name for name, _, _ in GAUGES} == {f.name for f in fields(UpstreamValues)}


def parse_vllm_metrics(text: str) -> UpstreamValues:
    """The values of a Prometheus text exposition (vLLM's /metrics); raises ValueError on a malformed body."""
    samples: dict[str, list[float]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # a counter's samples are <family>_total (and _created, skipped)
            if sample.name in (family.name, family.name + "_total") and not math.isnan(sample.value):
                samples[sample.name.removesuffix("_total")].append(sample.value)

    def read(combine: Callable[[list[float]], float], *names: str) -> float | None:
        """The first of `names` the server exports, combined over its label sets."""
        for name in names:
            if samples.get(f"vllm:{name}"):
                return combine(samples[f"vllm:{name}"])
        return None

    def total(*names: str) -> float | None:
        return read(sum, *names)

    def mean(*names: str) -> float | None:
        return read(lambda values: sum(values) / len(values), *names)

    accepted, drafts = total("spec_decode_num_accepted_tokens"), total("spec_decode_num_drafts")
    return UpstreamValues(
        running=total("num_requests_running"),
        waiting=total("num_requests_waiting"),
        kv_cache_usage=mean("kv_cache_usage_perc", "gpu_cache_usage_perc"),
        prefix_cache_hit_ratio=_first(_ratio(total("prefix_cache_hits", "gpu_prefix_cache_hits"),
                                             total("prefix_cache_queries", "gpu_prefix_cache_queries")),
                                      mean("gpu_prefix_cache_hit_rate")),
        spec_decode_acceptance=_first(_ratio(accepted, total("spec_decode_num_draft_tokens")),
                                      mean("spec_decode_draft_acceptance_rate")),
        spec_decode_mean_acceptance_length=None if (per_draft := _ratio(accepted, drafts)) is None else 1 + per_draft,
    )


def _first(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


def _ratio(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None
