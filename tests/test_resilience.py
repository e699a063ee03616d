"""Replicas, retries, fallback, health checks and circuit breakers, through the official openai SDK
against real HTTP upstreams: two instances of test_gateway_errors' misbehaving server (behaviour
chosen by the model name; each counts the requests it received) and ports where nothing listens.
No model needed. The real-process version (engine replicas killed and restarted) is in
test_resilience_replicas.py."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import UvicornServer, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from test_gateway_errors import _upstream_chat, _upstream_models

from gateway.api import create_app
from gateway.backends import build_backends
from gateway.balancer import Balancer
from gateway.breaker import CircuitBreaker
from gateway.config import parse_config

HI = [{"role": "user", "content": "hi"}]


class CountingUpstream:
    """test_gateway_errors' upstream, counting chat requests per requested model."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                Route("/v1/models", _upstream_models)])
        self.server = UvicornServer(app)
        self.base_url = self.server.base_url

    async def _chat(self, request: Request):
        self.calls[(await request.json())["model"]] += 1
        return await _upstream_chat(request)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[CountingUpstream, CountingUpstream]]:
    pair = CountingUpstream(), CountingUpstream()
    for upstream in pair:
        upstream.server.start(ready_path="/v1/models")
    yield pair
    for upstream in pair:
        upstream.server.stop()


@pytest.fixture(autouse=True)
def _fresh_counts(upstreams):
    for upstream in upstreams:
        upstream.calls.clear()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


def deployment(name: str, model: str, url: str, **settings: str) -> str:
    fields = ", ".join([f"name: {name}", "kind: openai", f"model: {model}", f'url: "{url}"', "connect_timeout_s: 2",
                        *(f"{key}: {value}" for key, value in settings.items())])
    return "{" + fields + "}"


def config_text(small: list[str], large: list[str] | None = None, routing: str = "") -> str:
    text = f"tiers:\n  small:\n    deployments: [{', '.join(small)}]\n"
    if large:
        text += f"  large:\n    deployments: [{', '.join(large)}]\n"
    return text + f"routing: {{router: none, retry: {{backoff_s: 0.01}}{routing}}}\n"


@contextlib.contextmanager
def gateway(text: str) -> Iterator[tuple[UvicornServer, openai.OpenAI]]:
    with UvicornServer(create_app(parse_config(text))) as server:
        yield server, openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)


def chat(client: openai.OpenAI, model: str = "auto", **kwargs):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HI, **kwargs)
    return raw.headers, raw.parse()


def ready(server: UvicornServer) -> httpx.Response:
    return httpx.get(server.url + "/ready", timeout=5)


def wait_until_checked(server: UvicornServer, deployment: str, healthy: bool, timeout_s: float = 30) -> None:
    """Until the background health check has judged `deployment`."""
    deadline = time.monotonic() + timeout_s
    while ready(server).json()["deployments"][deployment]["healthy"] is not healthy:
        assert time.monotonic() < deadline, f"{deployment} never checked {healthy}"
        time.sleep(0.05)


# --- the circuit breaker alone, on a clock the test moves ----------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_once_and_closes():
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown_s=10, clock=clock)
    breaker.failure()
    assert breaker.state == "closed" and breaker.allows()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allows()
    clock.now = 10
    assert breaker.state == "half-open" and breaker.allows()
    breaker.begin()  # the probe
    assert not breaker.allows()  # one probe at a time
    breaker.failure()  # probe failed: open again for a full cool-down
    assert breaker.state == "open"
    clock.now = 19
    assert not breaker.allows()
    clock.now = 20
    breaker.begin()
    breaker.release()  # busy: says nothing, frees the probe slot
    assert breaker.allows()
    breaker.begin()
    breaker.success()
    assert breaker.state == "closed" and breaker.allows()
    breaker.failure()
    assert breaker.state == "closed"  # the count restarted at the success


# --- choosing a replica --------------------------------------------------------------------------

def test_least_outstanding_then_round_robin():
    config = parse_config(config_text([deployment(f"r{i}", "m", f"http://h{i}/v1", breaker="{failures: 1}")
                                       for i in range(3)]))
    balancer = Balancer(config, build_backends(config))
    r0, r1, r2 = balancer.tiers["small"]
    with r0.lease(), r0.lease(), r1.lease():
        assert balancer.choose("small") is r2
        with r2.lease(), r2.lease():
            assert balancer.choose("small") is r1
            assert balancer.choose("small", exclude=[r1]) in (r0, r2)
    assert [balancer.choose("small").name for _ in range(3)] in (["r0", "r1", "r2"], ["r1", "r2", "r0"],
                                                                   ["r2", "r0", "r1"])  # ties: round-robin
    r1.healthy = False  # last health check failed
    r2.breaker.failure()  # breaker open
    assert {balancer.choose("small").name for _ in range(3)} == {"r0"}
    assert balancer.choose("small", exclude=[r0]) is None
    assert balancer.choose("small", exclude=[r0], healthy_only=False) is r1  # an open breaker: never
    assert balancer.pick("small", "m") is r0 and balancer.pick("small", "other") is None


def test_duplicate_deployment_names_are_refused():
    config = parse_config(config_text([deployment("x", "a", "http://h1/v1"), deployment("x", "b", "http://h2/v1")]))
    with pytest.raises(ValueError, match="unique"):
        Balancer(config, build_backends(config))


# --- retries before the first byte ---------------------------------------------------------------

@pytest.mark.parametrize("failing", ["boom", "stall-before"])
@pytest.mark.parametrize("stream", [False, True])
def test_failure_before_first_byte_moves_to_another_replica(upstreams, failing, stream):
    first, second = upstreams
    text = config_text([deployment("bad", failing, first.base_url, first_byte_timeout_s=0.5),
                        deployment("good", "echo", second.base_url)])
    with gateway(text) as (_, client):  # a fresh gateway's first pick is the first deployment
        if stream:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI, stream=True)
            headers, chunks = raw.headers, list(raw.parse())
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        else:
            headers, completion = chat(client)
            assert completion.choices[0].finish_reason == "tool_calls"
    assert (headers["x-turnout-deployment"], headers["x-turnout-model"]) == ("good", "echo")
    assert "x-turnout-fallback" not in headers
    assert (first.calls[failing], second.calls["echo"]) == (1, 1)


def test_no_retry_after_the_first_event(upstreams):
    first, second = upstreams
    text = config_text([deployment("stalls", "stall-after", first.base_url, timeout_s=0.5),
                        deployment("good", "echo", second.base_url)])
    with gateway(text) as (_, client):
        received = []
        with pytest.raises(openai.APIError, match="timed out"):
            for chunk in client.chat.completions.create(model="auto", messages=HI, stream=True):
                received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received) == "partial"
    assert second.calls["echo"] == 0


def test_client_errors_are_not_retried(upstreams):
    first, second = upstreams
    text = config_text([deployment("busy", "busy", first.base_url), deployment("good", "echo", second.base_url)])
    with gateway(text) as (_, client), pytest.raises(openai.RateLimitError):
        chat(client)
    assert second.calls["echo"] == 0


# --- fallback to the other tier ------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_whole_tier_down_falls_back(upstreams, stream):
    first, _ = upstreams
    text = config_text([deployment("s1", "dead", dead_url()), deployment("s2", "dead", dead_url())],
                       [deployment("l1", "echo", first.base_url)])
    with gateway(text) as (server, client):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI, stream=stream)
        body = raw.parse()
        choices = [chunk.choices[0] for chunk in body if chunk.choices] if stream else body.choices
        metrics = httpx.get(server.url + "/metrics").text
    assert choices[-1].finish_reason == "tool_calls"  # the whole answer, from the large tier
    assert raw.headers["x-turnout-fallback"] == "small->large"
    assert raw.headers["x-turnout-tier"] == "large"
    assert raw.headers["x-turnout-route-reason"] == "no-router+fallback"
    assert raw.headers["x-turnout-deployment"] == "l1"
    assert first.calls["echo"] == 1
    assert 'turnout_fallbacks_total{from_tier="small",to_tier="large"} 1.0' in metrics


def test_fallback_spares_pinned_models_and_can_be_turned_off(upstreams):
    first, _ = upstreams
    small = [deployment("s1", "dead", dead_url())]
    large = [deployment("l1", "echo", first.base_url)]
    with gateway(config_text(small, large)) as (_, client):
        with pytest.raises(openai.APIStatusError) as caught:
            chat(client, model="dead")  # the client named that model: another one's answer is not it
        assert caught.value.status_code == 502
        assert chat(client, model="small")[0]["x-turnout-fallback"] == "small->large"  # a tier: may fall back
    with gateway(config_text(small, large, routing=", fallback: false")) as (_, client):
        with pytest.raises(openai.APIStatusError) as caught:
            chat(client)
        assert caught.value.status_code == 502
        assert caught.value.response.headers["x-turnout-deployment"] == "s1"
    assert first.calls["echo"] == 1


# --- circuit breakers and health checks, as /ready and the balancer see them ----------------------

def test_breaker_opens_and_keeps_traffic_away(upstreams):
    first, second = upstreams
    text = config_text([deployment("flaky", "boom", first.base_url, breaker="{failures: 1, cooldown_s: 600}"),
                        deployment("good", "echo", second.base_url)])
    with gateway(text) as (server, client):
        served = [chat(client)[0]["x-turnout-deployment"] for _ in range(4)]
        state = ready(server)
        metrics = httpx.get(server.url + "/metrics").text
    assert served == ["good"] * 4
    assert first.calls["boom"] == 1  # failed once, then never tried again during the cool-down
    assert state.status_code == 200  # the tier still has a deployment up
    deployments = state.json()["deployments"]
    assert (deployments["flaky"]["breaker"], deployments["flaky"]["up"]) == ("open", False)
    assert (deployments["good"]["breaker"], deployments["good"]["up"]) == ("closed", True)
    assert 'turnout_deployment_breaker_open{deployment="flaky",model="boom"} 1.0' in metrics
    assert 'turnout_deployment_up{deployment="good",model="echo"} 1.0' in metrics
    assert 'turnout_backend_errors_total{model="boom",status="502",tier="small"} 1.0' in metrics  # retried


def test_failing_health_check_steers_traffic_away(upstreams):
    first, second = upstreams
    text = config_text([deployment("sick", "echo", first.base_url, health="{path: /nowhere, interval_s: 0.1}"),
                        deployment("well", "echo", second.base_url, health="{interval_s: 0.1}")])
    with gateway(text) as (server, client):
        wait_until_checked(server, "sick", False)
        wait_until_checked(server, "well", True)
        served = {chat(client)[0]["x-turnout-deployment"] for _ in range(4)}
        deployments = ready(server).json()["deployments"]
    assert served == {"well"}
    assert first.calls["echo"] == 0
    assert (deployments["sick"]["healthy"], deployments["well"]["healthy"]) == (False, True)


def test_unhealthy_replicas_still_serve_when_nothing_else_is_left(upstreams):
    """A stale or wrong health check must not make a tier unservable: with no healthy replica left
    (and no fallback), the unhealthy ones are still tried. /ready says the tier is down."""
    first, _ = upstreams
    text = config_text([deployment("sick", "echo", first.base_url, health="{path: /nowhere, interval_s: 0.1}")],
                       routing=", fallback: false")
    with gateway(text) as (server, client):
        wait_until_checked(server, "sick", False)
        headers, _ = chat(client)
        state = ready(server)
    assert headers["x-turnout-deployment"] == "sick"
    assert state.status_code == 503
    assert state.json()["dependencies"][f"openai:echo@{first.base_url}"] is False
