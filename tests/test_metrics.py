"""Prometheus /metrics of a real gateway (embedded SmolLM2 with n-gram speculative decoding, embedded Redis
cache): the counters and histograms move with the requests sent, each app has its own registry, and the
serve step's fallback hook reaches the metrics of the request's app."""

from __future__ import annotations

import openai
import pytest
from conftest import UvicornServer, wait_until_ready
from scrape import scrape, total

from gateway import metrics
from gateway.api import create_app
from gateway.config import parse_config

PROMPT = "Repeat this sentence twice: the quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def gateway(tiny_model: str):
    config = parse_config(f"""
tiers:
  small:
    deployments:
      - {{kind: embedded, model: {tiny_model}, speculative: {{method: ngram, num_speculative_tokens: 4}}}}
routing: {{router: none}}
cache: {{semantic_enabled: false}}
""")
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        yield server


@pytest.mark.slow
def test_metrics_move_with_requests(gateway, tiny_model):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-metrics", max_retries=0)
    messages = [{"role": "user", "content": PROMPT}]
    client.chat.completions.create(model="auto", messages=messages, max_tokens=30, temperature=0)
    client.chat.completions.create(model="auto", messages=messages, max_tokens=30, temperature=0)  # cache hit
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Say hello."}],
                                            max_tokens=5, temperature=0, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=messages, max_tokens=5)

    m = scrape(gateway.url)
    route = {"kind": "chat", "tier": "small", "model": tiny_model}
    assert total(m, "turnout_requests_total", **route, status="200") == 3
    assert total(m, "turnout_requests_total", status="404") == 1
    assert total(m, "turnout_request_duration_seconds_count", **route, status="200") == 3
    assert total(m, "turnout_time_to_first_token_seconds_count", **route) == 3
    assert total(m, "turnout_tokens_total", tier="small", type="prompt") > 0
    assert total(m, "turnout_tokens_total", tier="small", type="completion") > 0
    assert total(m, "turnout_router_decisions_total", tier="small", reason="single-tier") == 2  # not the hit
    assert total(m, "turnout_cache_requests_total", result="hit") == 1
    assert total(m, "turnout_cache_requests_total", result="miss") == 2
    drafted = total(m, "turnout_spec_decode_num_draft_tokens_total", tier="small")
    accepted = total(m, "turnout_spec_decode_num_accepted_tokens_total", tier="small")
    assert total(m, "turnout_spec_decode_num_drafts_total") > 0 and drafted >= accepted > 0
    assert total(m, "turnout_spec_decode_num_accepted_tokens_per_pos_total", position="0") > 0
    assert "turnout_cache_errors_total" in m or total(m, "turnout_cache_errors_total") == 0


@pytest.mark.slow
def test_each_app_has_its_own_registry(gateway):
    config = parse_config("""
tiers: {small: {deployments: [{kind: openai, model: elsewhere, url: "http://127.0.0.1:9/v1"}]}}
routing: {router: none}
""")
    with UvicornServer(create_app(config)) as other:  # up on /health; its backend is nowhere
        assert total(scrape(other.url), "turnout_requests_total") == 0
    assert total(scrape(gateway.url), "turnout_requests_total") > 0


def test_fallback_hook_records_in_the_current_apps_metrics():
    first, second = metrics.Metrics(), metrics.Metrics()
    metrics.record_fallback("large", "small")  # outside a request: nowhere to record, no error
    with metrics.using(first):
        metrics.record_fallback("large", "small")
        metrics.record_backend_error("large", "m", 503)
    labels = {"from_tier": "large", "to_tier": "small"}
    assert first.registry.get_sample_value("turnout_fallbacks_total", labels) == 1
    assert first.registry.get_sample_value("turnout_backend_errors_total",
                                           {"tier": "large", "model": "m", "status": "503"}) == 1
    assert second.registry.get_sample_value("turnout_fallbacks_total", labels) is None
