"""Read a gateway's /metrics the way Prometheus does (its own text parser), for assertions in tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(base_url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of `base_url`/metrics, by sample name (`turnout_requests_total`, `…_bucket`, …)."""
    response = httpx.get(base_url + "/metrics", timeout=10)
    response.raise_for_status()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(value for sample_labels, value in samples.get(name, [])
               if all(sample_labels.get(k) == v for k, v in labels.items()))
