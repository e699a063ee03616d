"""Prefix caching through the gateway: a chat's next turn reports the reused prompt tokens the way OpenAI
does (usage.prompt_tokens_details.cached_tokens), only within the tenant, and in /metrics; a remote
server (turnout's engine server standing in for vLLM) keeps tenants apart when sent cache_salt."""

from __future__ import annotations

import openai
import pytest
from conftest import TurnoutProcess, UvicornServer, running_gateway
from scrape import scrape, total

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tiny_model: str, engine_server: TurnoutProcess):
    with running_gateway(f"""
tiers:
  small:
    deployments:
      - {{kind: embedded, model: {tiny_model}}}
  large:
    deployments:
      - {{kind: openai, model: {tiny_model}, url: "{engine_server.base_url}", cache_salt: true}}
routing: {{router: none}}
cache: {{semantic_enabled: false}}
""") as server:
        yield server


def chat(gateway: UvicornServer, api_key: str, messages: list[dict[str, str]], tier: str = "small"):
    client = openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0)
    return client.chat.completions.create(model="auto", messages=messages, max_tokens=24, temperature=0,
                                          extra_headers={"x-turnout-tier": tier})


def two_turns(gateway: UvicornServer, tier: str, topic: str):
    """(tenant a's first reply, the second turn's messages) after tenant a's first turn."""
    first = [{"role": "system", "content": "You answer in one short sentence."},
             {"role": "user", "content": f"Name a colour of {topic}."}]
    reply = chat(gateway, "sk-tenant-a", first, tier)
    return reply, [*first, {"role": "assistant", "content": reply.choices[0].message.content},
                   {"role": "user", "content": "Why?"}]


def test_next_turn_reuses_the_conversation_within_the_tenant_only(gateway):
    reply, second = two_turns(gateway, "small", "the sky")
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    again = chat(gateway, "sk-tenant-a", second)
    assert again.usage.prompt_tokens_details.cached_tokens >= reply.usage.prompt_tokens
    other = chat(gateway, "sk-tenant-b", second)  # another tenant: nothing of tenant a's is reused
    assert other.usage.prompt_tokens_details.cached_tokens == 0
    assert other.choices[0].message.content == again.choices[0].message.content

    reused = total(scrape(gateway.url), "turnout_prompt_cached_tokens_total", tier="small")
    assert reused == again.usage.prompt_tokens_details.cached_tokens


def test_a_remote_server_keeps_tenants_apart_when_sent_cache_salt(gateway, tiny_model, engine_server):
    _, second = two_turns(gateway, "large", "grass")
    assert chat(gateway, "sk-tenant-a", second, "large").usage.prompt_tokens_details.cached_tokens > 0
    assert chat(gateway, "sk-tenant-b", second, "large").usage.prompt_tokens_details.cached_tokens == 0
    # without cache_salt the server sees one caller, the gateway, and shares its cache between tenants
    with running_gateway(f"""
tiers:
  large:
    deployments:
      - {{kind: openai, model: {tiny_model}, url: "{engine_server.base_url}"}}
routing: {{router: none}}
""") as shared:
        _, second = two_turns(shared, "large", "snow")
        assert chat(shared, "sk-tenant-b", second, "large").usage.prompt_tokens_details.cached_tokens > 0


def test_a_clients_cache_salt_narrows_the_scope_within_its_tenant(gateway):
    _, second = two_turns(gateway, "small", "a lemon")
    salted = openai.OpenAI(base_url=gateway.base_url, api_key="sk-tenant-a", max_retries=0)
    reply = salted.chat.completions.create(model="auto", messages=second, max_tokens=24, temperature=0,
                                           extra_body={"cache_salt": "user-42"})
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
