"""Speculative decoding through the gateway: same answer with drafts on and off (x-turnout-speculative),
vLLM-style counters in the usage extension, and retrieval drafting from the cache's nearest answer."""

from __future__ import annotations

import openai
import pytest
from conftest import UvicornServer, wait_until_ready

from gateway.api import create_app
from gateway.config import parse_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tiny_model: str):
    config = parse_config(f"""
tiers:
  large:
    deployments:
      - kind: embedded
        model: {tiny_model}
        speculative: {{method: ngram, num_speculative_tokens: 4}}
routing: {{router: none}}
cache: {{semantic_enabled: true, similarity_threshold: 0.999}}  # reworded prompts miss, but are near
""")
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        yield server


def ask(gateway: UvicornServer, content: str, *, speculative: str = "on", no_store: bool = False):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-spec", max_retries=0)
    headers = {"x-turnout-speculative": speculative}
    if no_store:
        headers["cache-control"] = "no-store"
    return client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": content}], max_tokens=40, temperature=0,
        extra_headers=headers)


PROMPT = "Repeat this sentence twice: the quick brown fox jumps over the lazy dog."


def test_same_answer_with_speculation_on_and_off(gateway):
    on = ask(gateway, PROMPT, no_store=True)
    off = ask(gateway, PROMPT, speculative="off", no_store=True)
    assert on.choices[0].message.content == off.choices[0].message.content
    counters = on.usage.model_extra["speculative"]
    assert counters["num_draft_tokens"] >= counters["num_accepted_tokens"] > 0
    assert len(counters["accepted_per_position"]) >= 1
    assert "speculative" not in (off.usage.model_extra or {})


def test_reworded_prompt_drafts_from_the_cached_answer(gateway):
    ask(gateway, "Write one sentence about the history of the city of Rome.")  # cached: the reference
    reworded = ask(gateway, "Write one sentence about the history of the city of Rome, please.")
    baseline = ask(gateway, "Write one sentence about the history of the city of Rome, please.",
                   speculative="off", no_store=True)
    assert reworded.choices[0].message.content == baseline.choices[0].message.content
    counters = reworded.usage.model_extra["speculative"]
    assert counters["num_accepted_tokens"] >= 8  # the shared opening is copied from the cached answer
