"""Scraping each replica's server metrics in the background, and exporting them on the gateway's /metrics.

One task per replica with a metrics URL (`DeploymentConfig.metrics_url`: vLLM's `/metrics` by default
for kind openai) scrapes it every `metrics.interval_s` through one small aiohttp session of its own —
apart from the request pools, so a scrape never waits behind requests nor takes a connection from
them. The body is parsed in a worker thread (vLLM's is tens of kB of histograms), off the event loop.
The result goes onto `Replica.upstream`, which the balancer (`balance: least-queue`), /metrics and the
dashboard read. A failed scrape (refused, timed out, not 200, unparsable) only marks the snapshot
stale (`up` False, no values): requests never wait on it, and it is logged at debug level only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.balancer import Replica
from gateway.types import Tier
from gateway.upstream_metrics import GAUGES, UpstreamSnapshot, parse_vllm_metrics

log = logging.getLogger("turnout.upstream")

ACCEPT = {"Accept": "text/plain;version=0.0.4"}  # the text format, not OpenMetrics


@dataclass(frozen=True)
class _Target:
    replica: Replica
    url: str
    headers: dict[str, str]


class UpstreamPoller:
    def __init__(self, replicas: Iterable[Replica]):
        self._targets = [_Target(r, url, {**ACCEPT, **_auth(r)}) for r in replicas
                         if (url := r.deployment.metrics_url) is not None]
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Scrape every replica with a metrics URL now and every `metrics.interval_s` until `close`."""
        if not self._targets:
            return
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(self._targets)))
        self._tasks = [asyncio.create_task(self._watch(target), name=f"upstream-metrics-{target.replica.name}")
                       for target in self._targets]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _watch(self, target: _Target) -> None:
        interval = target.replica.deployment.metrics.interval_s
        while True:
            await self._scrape(target)
            await asyncio.sleep(interval)

    async def _scrape(self, target: _Target) -> None:
        """One scrape of `target` onto its replica; never raises."""
        replica, session = target.replica, self._session
        assert session is not None
        timeout = aiohttp.ClientTimeout(total=replica.deployment.metrics.timeout_s)
        try:
            async with session.get(target.url, headers=target.headers, timeout=timeout) as response:
                outstanding = replica.outstanding  # the server's counts are as of (about) now
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                text = await response.text()
            values = await asyncio.to_thread(parse_vllm_metrics, text)
        except Exception as exc:  # a failed scrape must not end the task, nor reach any request
            log.debug("metrics of %s at %s: %s: %s", replica.name, target.url, type(exc).__name__, exc)
            replica.upstream = UpstreamSnapshot(up=False)
            return
        replica.upstream = UpstreamSnapshot(up=True, values=values, outstanding_at_scrape=outstanding)


def _auth(replica: Replica) -> dict[str, str]:
    """The deployment's api_key, as its requests send it (a proxy in front of vLLM may ask for it)."""
    key = replica.deployment.api_key
    return {"Authorization": f"Bearer {key}"} if key else {}


class UpstreamMetrics(Collector):
    """`turnout_upstream_*{tier, deployment}` at scrape time, from each replica's last snapshot: `…_metrics_up`
    for every scraped replica, the values only while fresh and exported by the server."""

    def __init__(self, tiers: dict[Tier, list[Replica]]):
        self.tiers = tiers

    def collect(self) -> Iterable[Metric]:
        labels = ["tier", "deployment"]
        up = GaugeMetricFamily("turnout_upstream_metrics_up", "1 when the last scrape of the deployment "
                               "server's own metrics succeeded, 0 when it failed (the values below are then absent)",
                               labels=labels)
        gauges = {field: GaugeMetricFamily(name, help_text, labels=labels) for field, name, help_text in GAUGES}
        for tier, replicas in self.tiers.items():
            for replica in {id(r): r for r in replicas}.values():  # a tier may list one deployment twice
                snapshot = replica.upstream
                if snapshot is None:
                    continue
                up.add_metric([tier, replica.name], float(snapshot.up))
                for field, family in gauges.items():
                    value = getattr(snapshot.values, field)
                    if snapshot.up and value is not None:
                        family.add_metric([tier, replica.name], value)
        yield up
        yield from gauges.values()
