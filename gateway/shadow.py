"""Shadow labelling (`routing.shadow`): a deployment's own router training data, from its own traffic.

A sampled share of requests is answered by the other tier as well, after the client's reply is complete
(and cached), and a judge compares the two answers in both orders (gateway/pairwise_judge.py). Each
outcome goes to the tenant's own place in the sink (gateway/shadow_sink.py: `<dir>/<tenant>.jsonl`, or
the tenant's Redis Stream) in the shape `turnout router train --data` reads, so one tenant's prompts never
land among another's. A sink that cannot keep a record now (Redis down) loses it, counted.

The client never waits for any of it: a sampled reply is offered to a bounded queue when its last event
has been sent, and dropped (counted) when the queue is full; one background worker does the extra
generation and judging. Requests marked `no-store` (Cache-Control) are never sampled: a client that
forbids keeping its answer forbids keeping it here too.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway import metrics
from gateway.answers import whole_answer
from gateway.cache import CacheMode
from gateway.config import ShadowConfig
from gateway.failover import Failover
from gateway.pairwise_judge import PairwiseJudge
from gateway.route import Route, Served
from gateway.shadow_sink import ShadowSink, SinkUnavailable
from gateway.types import BackendRequest, StreamEvent, Tier

log = logging.getLogger("turnout.shadow")

JUDGE_MAX_TOKENS = 4  # "A", "B" or "tie"


@dataclass(frozen=True)
class ShadowJob:
    tenant: str
    request: BackendRequest
    served: Served
    answer: str


class Shadow:
    def __init__(self, config: ShadowConfig, failover: Failover, judge: Route, sink: ShadowSink, *,
                 sample: Callable[[], float] = random.random):
        self.config = config
        self.sink = sink
        self.failover = failover
        self.judge_route = judge
        self.judge = PairwiseJudge(self._ask_judge)
        self._sample = sample
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(config.queue)
        self._worker: asyncio.Task[None] | None = None

    def samples(self, request: BackendRequest, mode: CacheMode) -> bool:
        """Whether this request gets a shadow: not under no-store, one choice, drawn at `fraction`."""
        return mode != "no-store" and int(request.params.get("n") or 1) == 1 and self._sample() < self.config.fraction

    async def watch(self, events: AsyncIterator[StreamEvent], served: Callable[[], Served], tenant: str,
                    request: BackendRequest) -> AsyncIterator[StreamEvent]:
        """`events` unchanged; once the last one has been sent, the reply is offered for shadowing."""
        text = []
        async for event in events:
            if not (event.extra or {}).get("index"):
                text.append(event.text)
            yield event
        self.offer(ShadowJob(tenant, request, served(), "".join(text)))

    def offer(self, job: ShadowJob) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="turnout-shadow")
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            metrics.record_shadow("dropped")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._label(job)
                metrics.record_shadow("labelled")
            except SinkUnavailable as exc:
                log.debug("shadow label lost: %s", exc)  # the sink's Redis logs its own failures
                metrics.record_shadow("sink-unavailable")
            except Exception:
                log.warning("shadow labelling failed for one request", exc_info=True)
                metrics.record_shadow("failed")

    async def _label(self, job: ShadowJob) -> None:
        other: Tier = "large" if job.served.tier == "small" else "small"
        if not self.failover.balancer.tiers.get(other):
            return
        if not self.sink.ready():
            raise SinkUnavailable("the sink cannot keep a record now")
        limit = min(int(job.request.params.get("max_tokens") or self.config.max_tokens), self.config.max_tokens)
        request = replace(job.request, model=other, params={**job.request.params, "max_tokens": limit},
                          reference=None)
        shadow = await whole_answer(self.failover, Route(other, "shadow", may_fall_back=False), request)
        answers = {job.served.tier: job.answer, other: shadow.text}
        prompt = job.request.prompt_text()
        comparison = await self.judge.compare(prompt, answers["small"], answers["large"])
        row: dict[str, Any] = {
            "prompt": prompt, "weak_quality": comparison.weak_quality, "strong_quality": comparison.strong_quality,
            "scored_by": f"judge:{self.judge_route.model or self.judge_route.tier}",
            "judge_verdicts": list(comparison.verdicts), "weak_answer": answers["small"],
            "strong_answer": answers["large"], "served_tier": job.served.tier, "route_reason": job.served.reason,
            "source": "shadow"}
        if job.request.messages is not None:
            row["messages"] = job.request.messages
        await self.sink.write(job.tenant, row)

    async def _ask_judge(self, messages: list[dict[str, Any]]) -> str:
        route = self.judge_route
        request = BackendRequest(kind="chat", model=route.model or route.tier, messages=messages,
                                 params={"max_tokens": JUDGE_MAX_TOKENS, "temperature": 0.0})
        return (await whole_answer(self.failover, route, request)).text

