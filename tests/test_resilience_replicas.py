"""Replicas for real: two `turnout engine serve` processes (SmolLM2-135M) behind one gateway, through
the official openai SDK. Load spreads over both; a replica killed with SIGKILL costs no request
(retried on the other before the first byte) and opens its breaker, which closes again once the
replica is restarted; a whole tier down falls back to the other; a replica killed mid-stream ends
the client's stream with an error event instead of a hang."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from conftest import TurnoutProcess, UvicornServer, wait_until_ready

from gateway.api import create_app
from gateway.config import parse_config

pytestmark = pytest.mark.slow

SHORT = [{"role": "user", "content": "Say hello."}]
RECOVERY_TIMEOUT_S = 120.0
# Two engines sharing a few cores: one torch thread each, or they thrash (minutes instead of seconds).
REPLICA_ENV = {"OMP_NUM_THREADS": "1"}


class EngineReplica:
    """One `turnout engine serve` process that a test may kill (SIGKILL) and start again on its port."""

    def __init__(self, model: str):
        self.model = model
        self.process = self._process()
        self.base_url = self.process.base_url

    def _process(self, port: int | None = None) -> TurnoutProcess:
        return TurnoutProcess("engine", "serve", "--model", self.model, "--max-batch-size", "4", port=port,
                              env=REPLICA_ENV)

    def start(self) -> EngineReplica:
        self.process.start()
        return self

    def kill(self) -> None:
        assert self.process.process is not None
        self.process.process.kill()
        self.process.process.wait()

    def restart(self) -> None:
        self.process = self._process(self.process.port)
        self.start()

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module")
def replicas(tiny_model: str) -> Iterator[tuple[EngineReplica, EngineReplica]]:
    pair = EngineReplica(tiny_model), EngineReplica(tiny_model)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(EngineReplica.start, pair))
    yield pair
    for replica in pair:
        replica.stop()


def replica_deployment(name: str, model: str, replica: EngineReplica) -> str:
    # one health check at start (/ready: the model is loaded), then breakers alone judge the replica
    return (f'{{name: {name}, kind: openai, model: {model}, url: "{replica.base_url}", connect_timeout_s: 2, '
            f"health: {{path: /ready, interval_s: 600}}, breaker: {{failures: 2, cooldown_s: 1}}}}")


@contextlib.contextmanager
def gateway(small: list[str], large: list[str] | None = None, *,
            wait_ready: bool = True) -> Iterator[tuple[UvicornServer, openai.OpenAI]]:
    text = f"server: {{request_timeout_s: 120}}\ntiers:\n  small:\n    deployments: [{', '.join(small)}]\n"
    if large:
        text += f"  large:\n    deployments: [{', '.join(large)}]\n"
    text += "routing: {router: none, retry: {backoff_s: 0.01}}\n"
    with UvicornServer(create_app(parse_config(text))) as server:
        if wait_ready:
            wait_until_ready(server.url)
        yield server, openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=120)


def chat(client: openai.OpenAI, model: str):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=SHORT, max_tokens=4,
                                                           temperature=0)
    completion = raw.parse()
    assert completion.model == model and completion.choices[0].message.content
    return raw.headers


def deployments(server: UvicornServer) -> dict[str, dict]:
    return httpx.get(server.url + "/ready", timeout=5).json()["deployments"]


def test_load_spreads_over_replicas(replicas, tiny_model):
    a, b = replicas
    with gateway([replica_deployment("a", tiny_model, a), replica_deployment("b", tiny_model, b)]) as (server, client):
        sequential = [chat(client, tiny_model)["x-turnout-deployment"] for _ in range(4)]

        async def concurrent() -> list[str]:
            async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0,
                                          timeout=120) as aclient:
                raws = await asyncio.gather(*(aclient.chat.completions.with_raw_response.create(
                    model="auto", messages=SHORT, max_tokens=4, temperature=0) for _ in range(4)))
            return [raw.headers["x-turnout-deployment"] for raw in raws]

        together = asyncio.run(concurrent())
        in_flight = {name: state["outstanding"] for name, state in deployments(server).items()}
    assert sorted(set(sequential)) == ["a", "b"]  # idle replicas tie: round-robin
    assert sorted(set(together)) == ["a", "b"]  # busy ones: the least loaded
    assert in_flight == {"a": 0, "b": 0}


def test_killed_replica_costs_no_request_and_its_breaker_recovers(replicas, tiny_model):
    a, b = replicas
    small = [replica_deployment("a", tiny_model, a), replica_deployment("b", tiny_model, b)]
    with gateway(small) as (server, client):
        b.kill()
        try:
            served = [chat(client, tiny_model)["x-turnout-deployment"] for _ in range(6)]  # none may fail
            after_kill = deployments(server)
            # a whole tier down (its only replica is b) → the other tier serves, and says so
            only_b_small = [replica_deployment("b", tiny_model, b)]
            with gateway(only_b_small, [replica_deployment("a", tiny_model, a)], wait_ready=False) as (_, fallback):
                fallback_headers = chat(fallback, tiny_model)
        finally:
            b.restart()
        # b is back: after the cool-down one request probes it, succeeds, and closes its breaker
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        recovered = []
        while "b" not in recovered and time.monotonic() < deadline:
            recovered.append(chat(client, tiny_model)["x-turnout-deployment"])
        after_restart = deployments(server)
    assert served == ["a"] * 6
    assert after_kill["b"]["breaker"] in ("open", "half-open") and after_kill["b"]["up"] is False
    assert after_kill["a"]["up"] is True
    assert fallback_headers["x-turnout-fallback"] == "small->large"
    assert (fallback_headers["x-turnout-tier"], fallback_headers["x-turnout-deployment"]) == ("large", "a")
    assert "b" in recovered
    assert (after_restart["b"]["breaker"], after_restart["b"]["up"]) == ("closed", True)


def test_replica_killed_mid_stream_ends_with_an_error_event(replicas, tiny_model):
    _, b = replicas
    with gateway([replica_deployment("b", tiny_model, b)]) as (server, client):
        stream = client.completions.create(model="auto", prompt="1, 2, 3, 4, 5, 6, 7, 8,", max_tokens=400,
                                           temperature=0, stream=True)
        received = []
        try:
            with pytest.raises(openai.APIError) as caught:
                for chunk in stream:
                    received.append(chunk.choices[0].text if chunk.choices else "")
                    if len(received) == 2:
                        b.kill()
        finally:
            if b.process.process is not None and b.process.process.poll() is not None:
                b.restart()
        state = deployments(server)["b"]
    assert not isinstance(caught.value, openai.APIConnectionError)  # an error event, not a broken/hung stream
    assert "unreachable" in caught.value.message
    assert len(received) >= 2
    assert state["outstanding"] == 0
