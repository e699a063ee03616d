"""A tier's whole answer outside a client's request, and which deployments a judge names: what offline
labelling (gateway/router_label.py) and shadow labelling (gateway/shadow.py) share."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass

from gateway.cascade import answer_confidence, token_logprobs, with_logprobs
from gateway.config import TIERS, TurnoutConfig
from gateway.failover import Failover
from gateway.route import Route
from gateway.types import BackendRequest


@dataclass
class Answer:
    """`confidence`: the answer's geometric-mean token probability, what `routing.cascade` judges by (None
    when the backend sent no logprobs), so labelled outcomes also measure the cascade (bench/router)."""

    text: str
    model: str | None
    confidence: float | None = None


async def whole_answer(failover: Failover, route: Route, request: BackendRequest) -> Answer:
    """`route`'s reply to `request`, asked with token logprobs; BackendError propagates."""
    serving = failover.serve(route, with_logprobs(request))
    async with aclosing(serving.events()) as events:  # type: ignore[type-var]
        received = [event async for event in events]
    logprobs = [logprob for event in received for logprob in token_logprobs(event)]
    return Answer("".join(event.text for event in received), serving.served.model, answer_confidence(logprobs))


def judge_route(config: TurnoutConfig, spec: str, setting: str) -> Route:
    """A judge named by `setting` (`--judge`, `routing.shadow.judge`): a tier, or a configured model id
    (served by that model's deployments alone). ValueError names the setting and what it may be."""
    if spec in TIERS:
        if spec not in config.tiers:
            raise ValueError(f"{setting} {spec}: no {spec} tier is configured")
        return Route(spec, "judge", may_fall_back=False)
    for tier, deployment in config.deployments():
        if deployment.model == spec:
            return Route(tier, "judge", model=spec, may_fall_back=False)
    models = sorted({d.model for _, d in config.deployments()})
    raise ValueError(f"{setting} {spec}: not a tier or a configured model (one of: small, large, {', '.join(models)})")
