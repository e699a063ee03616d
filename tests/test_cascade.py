"""Cascade escalation (routing.cascade), through the official openai SDK against real HTTP upstreams:
a scripted OpenAI-compatible server (scripted_upstream.py) whose answers carry the token logprobs its
model name asks for (sure, unsure, none), and the real engine server as the small tier, whose logprobs
are its own."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from conftest import TurnoutProcess
from scrape import scrape, total
from scripted_upstream import ANSWER, ScriptedUpstream, deployment, gateway, two_tiers

from gateway.config import ConfigError, parse_config

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> None:
    upstream.bodies.clear()


def config_text(url: str, small_model: str, cascade: str = "{confidence: 0.5, head_tokens: 2}") -> str:
    return (two_tiers(deployment(url, small_model), deployment(url, "large-model"))
            + f"routing: {{router: none, cascade: {cascade}}}\n")


def streamed_text(client: openai.OpenAI, **kwargs) -> tuple[dict[str, str], str, list]:
    with client.chat.completions.with_streaming_response.create(model="auto", messages=HI, stream=True,
                                                                **kwargs) as raw:
        chunks = [chunk for chunk in raw.parse() if chunk.choices]
        headers = dict(raw.headers)
    return headers, "".join(chunk.choices[0].delta.content or "" for chunk in chunks), chunks


@pytest.mark.parametrize("stream", [False, True])
def test_a_confident_small_answer_is_kept_without_the_logprobs_turnout_asked_for(upstream, stream):
    with gateway(config_text(upstream.server.base_url, "small-sure")) as (server, client):
        if stream:
            headers, text, chunks = streamed_text(client)
            assert all(chunk.choices[0].logprobs is None for chunk in chunks)
        else:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
            headers, reply = raw.headers, raw.parse()
            text = reply.choices[0].message.content
            assert reply.choices[0].logprobs is None
        assert text == "small-sure:The answer is here."
        assert headers["x-turnout-tier"] == "small" and headers["x-turnout-route-reason"] == "no-router"
        assert float(headers["x-turnout-cascade-confidence"]) == pytest.approx(0.9512, abs=1e-3)
        assert upstream.asked_logprobs("small-sure") == [True] and not upstream.bodies["large-model"]
        assert total(scrape(server.url), "turnout_cascade_decisions_total", outcome="kept") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_doubtful_small_answer_is_replaced_by_the_large_tiers_before_any_byte(upstream, stream):
    with gateway(config_text(upstream.server.base_url, "small-unsure")) as (server, client):
        if stream:  # judged on its first two tokens, which never reach the client
            headers, text, _ = streamed_text(client)
        else:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
            headers, text = raw.headers, raw.parse().choices[0].message.content
        assert text == "large-model:The answer is here."
        assert headers["x-turnout-tier"] == "large" and headers["x-turnout-route-reason"] == "cascade-escalated"
        assert float(headers["x-turnout-cascade-confidence"]) == pytest.approx(0.0498, abs=1e-3)
        assert upstream.asked_logprobs("large-model") == [False]  # the large tier's answer is not judged
        samples = scrape(server.url)
        assert total(samples, "turnout_cascade_decisions_total", outcome="escalated") == 1
        assert total(samples, "turnout_router_decisions_total", tier="large", reason="cascade-escalated") == 1


def test_the_clients_own_logprobs_request_is_honoured(upstream):
    with gateway(config_text(upstream.server.base_url, "small-sure")) as (_, client):
        reply = client.chat.completions.create(model="auto", messages=HI, logprobs=True)
    assert [entry.logprob for entry in reply.choices[0].logprobs.content] == [-0.05] * len(ANSWER)


def test_forced_tiers_and_rules_are_never_cascaded(upstream):
    rules = "{confidence: 0.5}, rules: [{name: hello, tier: small, when: {keywords: [hi]}}]"
    with gateway(config_text(upstream.server.base_url, "small-unsure", cascade=rules)) as (_, client):
        by_rule = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
        forced = client.chat.completions.with_raw_response.create(model="small", messages=HI)
    assert by_rule.headers["x-turnout-route-reason"] == "rule:hello"
    assert forced.headers["x-turnout-route-reason"] == "forced-model"
    for raw in (by_rule, forced):
        assert raw.headers["x-turnout-tier"] == "small" and "x-turnout-cascade-confidence" not in raw.headers
    assert upstream.asked_logprobs("small-unsure") == [False, False] and not upstream.bodies["large-model"]


def test_an_answer_without_logprobs_is_kept_and_counted_unscored(upstream):
    with gateway(config_text(upstream.server.base_url, "small-plain")) as (server, client):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
        assert raw.parse().choices[0].message.content == "small-plain:The answer is here."
        assert raw.headers["x-turnout-tier"] == "small" and "x-turnout-cascade-confidence" not in raw.headers
        assert total(scrape(server.url), "turnout_cascade_decisions_total", outcome="unscored") == 1


@pytest.mark.parametrize(("confidence", "tier"), [(0.999, "large"), (0.001, "small")])
def test_the_real_engines_own_logprobs_decide(upstream, tiny_model: str, engine_server: TurnoutProcess,
                                              confidence: float, tier: str):
    small, large = deployment(engine_server.base_url, tiny_model), deployment(upstream.server.base_url, "large-model")
    text = two_tiers(small, large) + f"routing: {{router: none, cascade: {{confidence: {confidence}}}}}\n"
    with gateway(text) as (_, client):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0)
    assert raw.headers["x-turnout-tier"] == tier
    assert 0 < float(raw.headers["x-turnout-cascade-confidence"]) < 1
    assert (raw.parse().choices[0].message.content == "large-model:The answer is here.") is (tier == "large")


@pytest.mark.parametrize("cascade", ["{confidence: 0}", "{confidence: 1.5}", "{confidence: 0.5, head_tokens: 0}",
                                     "{}"])
def test_bad_cascade_settings_are_refused(cascade):
    with pytest.raises(ConfigError, match="routing.cascade"):
        parse_config(config_text("http://127.0.0.1:1/v1", "small-sure", cascade=cascade))
