"""Usage accounting to the token: a few known requests (served small, served large, a cache hit, a failure),
then /v1/usage for the calling key, another key and an admin key, checked against costs computed here
from the usage the SDK returned and the configured prices. The metrics' cost counters agree."""

from __future__ import annotations

import httpx
import openai
import pytest
import redis_proc
from conftest import TurnoutProcess, UvicornServer, wait_until_ready
from redis_proc import running_redis
from scrape import scrape, total

from gateway.api import create_app
from gateway.auth import hash_secret
from gateway.config import PricingConfig, parse_config
from gateway.handle import Handle
from gateway.metrics import Metrics
from gateway.state_store import StateStore
from gateway.usage import Pricing, UsageEntry, UsageLedger

pytestmark = pytest.mark.slow
redis_server = redis_proc.redis_server  # the shared fixture: a fresh redis-server per test

USER, OTHER, ADMIN = "tk-usage-user", "tk-usage-other", "tk-usage-admin"
SERVED_PRICE = (1.5, 4.0)  # $ per 1M prompt / completion tokens of the served model
BASELINE_PRICE = (2.5, 10.0)  # the model every request is compared with


def cost(price: tuple[float, float], usage) -> float:
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1e6


@pytest.fixture(scope="module")
def gateway(tiny_model: str, engine_server: TurnoutProcess, tmp_path_factory):
    upstream = f'{{kind: openai, model: {tiny_model}, url: "{engine_server.base_url}"}}'
    with running_redis(tmp_path_factory.mktemp("usage-redis")) as redis:
        config = parse_config(f"""
tiers:
  small: {{deployments: [{upstream}]}}
  large: {{deployments: [{upstream}]}}
routing: {{router: none}}
cache: {{redis_url: "{redis.url}", semantic_enabled: false}}
auth:
  enabled: true
  keys:
    - {{id: user, sha256: {hash_secret(USER)}}}
    - {{id: other, sha256: {hash_secret(OTHER)}}}
    - {{id: root, sha256: {hash_secret(ADMIN)}, admin: true}}
pricing:
  baseline_model: gpt-4o
  models:
    {tiny_model}: {{input_per_1m: {SERVED_PRICE[0]}, output_per_1m: {SERVED_PRICE[1]}}}
    gpt-4o: {{input_per_1m: {BASELINE_PRICE[0]}, output_per_1m: {BASELINE_PRICE[1]}}}
""")
        with UvicornServer(create_app(config)) as server:
            wait_until_ready(server.url)
            yield server


def ask(gateway: UvicornServer, content: str, model: str = "auto"):
    client = openai.OpenAI(base_url=gateway.base_url, api_key=USER, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=5, temperature=0)
    return raw.headers, raw.parse().usage


def usage(gateway: UvicornServer, api_key: str) -> dict:
    response = httpx.get(gateway.base_url + "/usage", headers={"authorization": f"Bearer {api_key}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def test_usage_and_savings_are_exact(gateway, tiny_model):
    small_headers, small = ask(gateway, "Name a colour.")
    hit_headers, hit = ask(gateway, "Name a colour.")
    large_headers, large = ask(gateway, "Name a fruit.", model="large")
    with pytest.raises(openai.NotFoundError):
        ask(gateway, "Name a tree.", model="no-such-model")
    assert (small_headers["x-turnout-tier"], large_headers["x-turnout-tier"]) == ("small", "large")
    assert hit_headers["x-turnout-cache"] == "hit" and hit == small

    spent = cost(SERVED_PRICE, small) + cost(SERVED_PRICE, large)
    baseline = cost(BASELINE_PRICE, small) + cost(BASELINE_PRICE, hit) + cost(BASELINE_PRICE, large)
    report = usage(gateway, USER)
    assert report["scope"] == "key" and report["key"]["id"] == "user"
    assert (report["requests"], report["failed_requests"]) == (3, 1)
    for tier, served in (("small", small), ("large", large)):
        assert report["by_tier"][tier] == {
            "requests": 1, "prompt_tokens": served.prompt_tokens, "completion_tokens": served.completion_tokens,
            "cost_usd": pytest.approx(cost(SERVED_PRICE, served), rel=1e-9)}
    assert report["by_model"][tiny_model]["requests"] == 2
    assert report["cache"] == {"hits": 1, "semantic_hits": 0, "prompt_tokens": hit.prompt_tokens,
                               "completion_tokens": hit.completion_tokens}
    assert report["cost_usd"] == pytest.approx(spent, rel=1e-9)
    assert report["baseline_cost_usd"] == pytest.approx(baseline, rel=1e-9)
    assert report["savings_usd"] == pytest.approx(baseline - spent, rel=1e-9)
    assert report["baseline_model"] == "gpt-4o" and report["unpriced_models"] == []

    assert usage(gateway, OTHER)["requests"] == 0  # a key sees its own usage only

    everything = usage(gateway, ADMIN)
    assert everything["scope"] == "all" and everything["requests"] == 3
    assert everything["savings_usd"] == pytest.approx(baseline - spent, rel=1e-9)
    assert {key["id"]: key["requests"] for key in everything["keys"]} == {"user": 3}

    metrics = scrape(gateway.url)
    assert total(metrics, "turnout_cost_usd_total") == pytest.approx(spent, rel=1e-6)
    assert total(metrics, "turnout_baseline_cost_usd_total") == pytest.approx(baseline, rel=1e-6)
    assert total(metrics, "turnout_requests_total", status="404") == 1


async def test_concurrent_records_are_written_behind_in_few_round_trips(redis_server):
    """The ledger coalesces: 200 concurrent requests' counts arrive exactly, in far fewer than 200 writes."""
    state = StateStore.connect(redis_server.url, Metrics())
    handle: Handle[StateStore] = Handle("usage redis")
    handle.set(state)
    ledger = UsageLedger(Pricing(PricingConfig(), None), handle)
    writes = 0
    run = state.run

    async def counting_run(component, call):
        nonlocal writes
        writes += 1
        return await run(component, call)

    state.run = counting_run  # type: ignore[method-assign]
    entries = [UsageEntry("served", "small", "m", 3, 5), UsageEntry("hit", "small", "m", 3, 5)]
    for i in range(200):
        ledger.record(f"acct{i % 2}", entries[i % 2])
    report = await ledger.report("acct0")
    assert report["by_tier"]["small"] == {"requests": 100, "prompt_tokens": 300, "completion_tokens": 500,
                                          "cost_usd": 0.0}
    assert (await ledger.report("acct1"))["cache"]["hits"] == 100
    assert writes < 20
    await state.close()
