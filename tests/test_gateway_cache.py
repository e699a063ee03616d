"""The cache step in the request path: a real embedded Redis, a real model behind `turnout engine serve`,
the official SDK as client. Exact hits replay the answer with the original route's headers; API keys
never share entries; Cache-Control opts out."""

from __future__ import annotations

import openai
import pytest
from conftest import TurnoutProcess, UvicornServer, wait_until_ready

from gateway.api import create_app
from gateway.config import parse_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tiny_model: str, engine_server: TurnoutProcess):
    config = parse_config(f"""
tiers:
  small:
    deployments: [{{kind: openai, model: {tiny_model}, url: "{engine_server.base_url}"}}]
routing: {{router: none}}
cache: {{semantic_enabled: false}}
""")
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        yield server


def ask(gateway: UvicornServer, content: str, *, api_key: str = "sk-one", stream: bool = False, **kwargs):
    client = openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0)
    params = {"max_tokens": 6, "temperature": 0, **kwargs}
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": content}], stream=stream, **params)
    parsed = raw.parse()
    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in parsed if chunk.choices)
    else:
        text = parsed.choices[0].message.content
    return raw.headers, text


def test_exact_hit_replays_with_route_headers(gateway, tiny_model):
    first_headers, first = ask(gateway, "Name a colour.")
    assert first_headers["x-turnout-cache"] == "miss"
    headers, again = ask(gateway, "Name a colour.")
    assert headers["x-turnout-cache"] == "hit"
    assert again == first
    assert headers["x-turnout-model"] == tiny_model
    assert headers["x-turnout-tier"] == first_headers["x-turnout-tier"]
    assert headers["x-turnout-route-reason"] == first_headers["x-turnout-route-reason"]

    stream_headers, streamed = ask(gateway, "Name a colour.", stream=True)
    assert (stream_headers["x-turnout-cache"], streamed) == ("hit", first)


def test_api_keys_do_not_share_entries(gateway):
    ask(gateway, "Name a fruit.", api_key="sk-alice")
    assert ask(gateway, "Name a fruit.", api_key="sk-alice")[0]["x-turnout-cache"] == "hit"
    assert ask(gateway, "Name a fruit.", api_key="sk-bob")[0]["x-turnout-cache"] == "miss"


def test_cache_control_opts_out(gateway):
    ask(gateway, "Name an animal.")
    no_store = {"Cache-Control": "no-store"}
    assert ask(gateway, "Name an animal.", extra_headers=no_store)[0]["x-turnout-cache"] == "bypass"
    assert ask(gateway, "Name a tree.", extra_headers=no_store)[0]["x-turnout-cache"] == "bypass"
    assert ask(gateway, "Name a tree.")[0]["x-turnout-cache"] == "miss"  # no-store wrote nothing


def test_sampled_requests_are_not_cached(gateway):
    headers, _ = ask(gateway, "Name a city.", temperature=0.9)
    assert headers["x-turnout-cache"] == "bypass"


def test_semantic_hit_through_the_shared_encoder(tiny_model, engine_server):
    """A paraphrase is answered from the cache: the prompt is embedded once by the router's encoder."""
    config = parse_config(f"""
tiers:
  small:
    deployments: [{{kind: openai, model: {tiny_model}, url: "{engine_server.base_url}"}}]
routing: {{router: none}}
cache: {{semantic_enabled: true}}
""")
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        first_headers, first = ask(server, "What is the capital city of France?")
        headers, again = ask(server, "What's the capital city of France?")
    assert first_headers["x-turnout-cache"] == "miss"
    assert headers["x-turnout-cache"] == "semantic-hit"
    assert float(headers["x-turnout-cache-similarity"]) >= 0.9
    assert again == first
