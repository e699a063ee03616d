"""End to end through the official openai SDK: a gateway whose small tier is the embedded engine
and whose large tier is a second process (`turnout engine serve`) reached over HTTP, both serving
SmolLM2-135M."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import openai
import pytest
from conftest import TurnoutProcess, UvicornServer, running_gateway, wait_until_ready

from gateway.api import create_app
from gateway.config import parse_config
from router_models import load_router

pytestmark = pytest.mark.slow

SMALL_CONTEXT = 512  # capped in the config so context-overflow routing is cheap to trigger
LARGE_CONTEXT = 1024
SHORT = [{"role": "user", "content": "Say hello."}]


def gateway_config(model: str, remote_url: str) -> str:
    return f"""
server: {{request_timeout_s: 120}}
tiers:
  small:
    deployments:
      - {{kind: embedded, model: {model}, max_batch_size: 4, context_length: {SMALL_CONTEXT}}}
  large:
    deployments:
      - {{kind: openai, model: {model}, url: "{remote_url}", timeout_s: 60, context_length: {LARGE_CONTEXT}}}
routing:
  router: length
  threshold: 0.5
  rules:
    - {{name: shout, tier: large, when: {{keywords: [URGENT]}}}}
models_aliases:
  gpt-4o-mini: small
"""


@pytest.fixture(scope="module")
def gateway(tiny_model: str, engine_server: TurnoutProcess):
    config = parse_config(gateway_config(tiny_model, engine_server.base_url))
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        yield server


@pytest.fixture(scope="module")
def client(gateway: UvicornServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0)


@pytest.fixture(scope="module")
def aclient(gateway: UvicornServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0)


def chat(client: openai.OpenAI, messages=SHORT, model: str = "auto", **kwargs):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=8,
                                                           temperature=0, **kwargs)
    return raw.headers, raw.parse()


# --- happy paths ---------------------------------------------------------------------------------

def test_chat_non_stream(client, tiny_model):
    headers, completion = chat(client)
    assert completion.object == "chat.completion"
    assert completion.model == tiny_model
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens >= 1
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert headers["x-turnout-model"] == tiny_model
    assert headers["x-turnout-tier"] == "small"
    assert headers["x-turnout-route-reason"] == "router"
    assert 0.0 <= float(headers["x-turnout-router-score"]) < 0.5


def test_chat_stream_with_usage(client, tiny_model):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=SHORT, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["x-turnout-tier"] == "small"
    chunks = list(raw.parse())
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == tiny_model for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    _, whole = chat(client)
    assert text == whole.choices[0].message.content  # greedy: stream and non-stream agree


def test_completions(client, tiny_model):
    completion = client.completions.create(model="small", prompt="The capital of France is", max_tokens=6,
                                           temperature=0)
    assert completion.object == "text_completion"
    assert completion.model == tiny_model
    assert completion.choices[0].text
    stream = client.completions.create(model="small", prompt="The capital of France is", max_tokens=6,
                                       temperature=0, stream=True)
    streamed = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert streamed == completion.choices[0].text


def test_models_list(client, tiny_model):
    ids = [model.id for model in client.models.list()]
    assert ids[:3] == ["auto", "small", "large"]
    assert tiny_model in ids and "gpt-4o-mini" in ids
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


async def test_async_client_concurrent(aclient, tiny_model):
    async def one(model: str):
        return await aclient.chat.completions.create(model=model, messages=SHORT, max_tokens=6, temperature=0)

    results = await asyncio.gather(one("small"), one("large"), one("auto"))
    assert all(r.choices[0].message.content for r in results)
    # both tiers serve the same weights greedily, embedded and over HTTP: same answer
    assert results[0].choices[0].message.content == results[1].choices[0].message.content

    stream = await aclient.chat.completions.create(model="large", messages=SHORT, max_tokens=6, temperature=0,
                                                   stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == results[1].choices[0].message.content


# --- routing -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "extra_headers", "tier", "reason"), [
    ("large", None, "large", "forced-model"),
    ("small", None, "small", "forced-model"),
    ("gpt-4o-mini", None, "small", "forced-model"),
    ("auto", {"x-turnout-tier": "large"}, "large", "forced-header"),
    ("small", {"x-turnout-tier": "large"}, "large", "forced-header"),
])
def test_forced_tiers(client, model, extra_headers, tier, reason):
    headers, completion = chat(client, model=model, extra_headers=extra_headers)
    assert headers["x-turnout-tier"] == tier
    assert headers["x-turnout-route-reason"] == reason
    assert "x-turnout-router-score" not in headers
    assert completion.choices[0].message.content


def test_rule_routes_large(client):
    headers, _ = chat(client, messages=[{"role": "user", "content": "URGENT: say hi"}])
    assert (headers["x-turnout-tier"], headers["x-turnout-route-reason"]) == ("large", "rule:shout")


def test_router_sends_long_prompt_large(client):
    prompt = "Explain what this list of words has in common: " + ", ".join(["apple", "pear"] * 60)
    headers, _ = chat(client, messages=[{"role": "user", "content": prompt}])
    assert headers["x-turnout-route-reason"] == "router"
    assert headers["x-turnout-tier"] == "large"
    assert float(headers["x-turnout-router-score"]) >= 0.5


def test_context_overflow_goes_large(client):
    prompt = "one two three four " * 150  # ~600 tokens: beyond the small tier's 512, within the large's 1024
    headers, completion = chat(client, messages=[{"role": "user", "content": prompt}])
    assert (headers["x-turnout-tier"], headers["x-turnout-route-reason"]) == ("large", "context-overflow")
    assert completion.choices[0].message.content is not None


def test_prompt_beyond_every_context(client):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, messages=[{"role": "user", "content": "one two three four " * 1000}])
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "param"), [
    ({"max_tokens": -1}, "max_tokens"),
    ({"temperature": 3.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_bad_params_are_400(client, kwargs, param):
    request = {"model": "auto", "messages": SHORT, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"n": 9}, "n"),  # beyond the engines' max_batch_size
    ({"logprobs": True, "top_logprobs": 25}, "top_logprobs"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"extra_body": {"top_k": 5}}, "top_k"),
])
@pytest.mark.parametrize("model", ["small", "large"])  # embedded refuses; remote passes the upstream 400 on
def test_unsupported_fields_named(client, model, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=SHORT, max_tokens=4, **kwargs)
    assert caught.value.body["param"] == param
    assert param in caught.value.body["message"]


@pytest.mark.parametrize("model", ["small", "large"])  # in-process, and through the engine's own server
def test_n_answers_side_by_side(client, model):
    """`n`: choice i samples with seed + i, so choice 0 is the n = 1 answer and every choice is reproducible;
    the prompt is counted once and the completions summed; a stream carries each choice's own index."""
    request = {"model": model, "messages": SHORT, "max_tokens": 6, "temperature": 1.0, "seed": 11,
               "extra_headers": {"cache-control": "no-store"}}
    three = client.chat.completions.create(**request, n=3)
    one = client.chat.completions.create(**request)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.choices[0].message.content == one.choices[0].message.content
    assert len({c.message.content for c in three.choices}) > 1  # sampled apart, not one answer thrice
    assert three.usage.prompt_tokens == one.usage.prompt_tokens
    assert three.usage.completion_tokens == sum(
        client.chat.completions.create(**{**request, "seed": 11 + i}).usage.completion_tokens for i in range(3))
    chunks = list(client.chat.completions.create(**request, n=3, stream=True, stream_options={"include_usage": True}))
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in range(3)}
    assert [texts[i] for i in range(3)] == [c.message.content for c in three.choices]
    finishes = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(finishes) == [0, 1, 2]
    assert chunks[-1].usage.completion_tokens == three.usage.completion_tokens
    greedy = client.chat.completions.create(**{**request, "temperature": 0}, n=2)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


@pytest.mark.parametrize("model", ["small", "large"])  # in-process, and through the engine's own server
def test_logprobs_streamed_and_whole_agree(client, model):
    """OpenAI's chat logprobs: one entry per completion token, each with its top alternatives; the stream's
    pieces add up to the whole response's."""
    request = {"model": model, "messages": SHORT, "max_tokens": 6, "temperature": 0, "logprobs": True,
               "top_logprobs": 2, "extra_headers": {"cache-control": "no-store"}}
    whole = client.chat.completions.create(**request)
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens
    assert all(len(item.top_logprobs) == 2 and item.logprob <= 0 for item in content)
    assert "".join(item.token for item in content) == whole.choices[0].message.content
    chunks = list(client.chat.completions.create(**request, stream=True))
    streamed = [item for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                for item in chunk.choices[0].logprobs.content]
    assert [(item.token, round(item.logprob, 3)) for item in streamed] == [
        (item.token, round(item.logprob, 3)) for item in content]


def test_unknown_model_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, model="gpt-5-turbo-ultra")
    assert caught.value.body["code"] == "model_not_found"


def test_bad_json_and_unknown_routes(gateway):
    response = httpx.post(gateway.base_url + "/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    response = httpx.post(gateway.base_url + "/chat/completions", json=["a", "list"])
    assert response.status_code == 400 and "error" in response.json()

    response = httpx.get(gateway.base_url + "/nowhere")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"

    response = httpx.get(gateway.base_url + "/chat/completions")
    assert response.status_code == 405 and response.json()["error"]["type"] == "invalid_request_error"


def test_bad_tier_header(client):
    with pytest.raises(openai.BadRequestError):
        chat(client, extra_headers={"x-turnout-tier": "medium"})


def test_health_and_ready(gateway):
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/ready")
    assert ready.status_code == 200 and all(ready.json()["dependencies"].values())


def test_client_disconnect_frees_the_engine(gateway, tiny_model):
    engine = gateway.server.config.app.state.runtime.pipeline.policy.tiers["small"][0].engine
    body = {"model": "small", "messages": SHORT, "max_tokens": 400, "stream": True,
            "temperature": 1.0}
    with httpx.stream("POST", gateway.base_url + "/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:") and '"content":"' in line and json.loads(line[5:])["choices"]:
                break  # got a token: hang up mid-generation
    wait_for(lambda: engine.scheduler.load == 0, "the engine to drop the abandoned stream")

    # non-streamed: hang up once the engine is generating for us
    payload = json.dumps({**body, "stream": False}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        wait_for(lambda: engine.scheduler.running, "the engine to start generating")
    wait_for(lambda: engine.scheduler.load == 0, "the engine to drop the abandoned request")


def wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_cli_serve_reads_turnout_config(tmp_path, tiny_model, engine_server):
    """`turnout serve` with the config path from TURNOUT_CONFIG, chained to the engine server."""
    config = tmp_path / "turnout.yaml"
    config.write_text(f"""
tiers:
  small:
    deployments: [{{kind: openai, model: {tiny_model}, url: "${{UPSTREAM}}"}}]
routing: {{router: none}}
""")
    gateway = TurnoutProcess("serve", env={"TURNOUT_CONFIG": str(config), "UPSTREAM": engine_server.base_url})
    gateway.start()
    try:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="k", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=SHORT, max_tokens=4)
        assert raw.headers["x-turnout-route-reason"] == "single-tier"
        assert raw.parse().choices[0].message.content
    finally:
        gateway.stop()


def test_a_follow_up_is_routed_with_the_question_it_follows(client, tiny_model, engine_server):
    long_question = "Explain what this list of words has in common: " + ", ".join(["apple", "pear"] * 60)
    conversation = [{"role": "user", "content": long_question}, {"role": "assistant", "content": "Fruit."},
                    {"role": "user", "content": "Why?"}]
    headers, _ = chat(client, messages=conversation)
    assert (headers["x-turnout-tier"], headers["x-turnout-route-reason"]) == ("large", "router-conversation")
    assert float(headers["x-turnout-router-score"]) >= 0.5

    # a router on the shared encoder gets every routed turn's embedding, in order
    question, follow_up = "Prove that the sum of the first n odd numbers is n squared.", "And for even numbers?"
    first, second = load_router("embedding").score([question, follow_up])
    remote = f'{{kind: openai, model: {tiny_model}, url: "{engine_server.base_url}", timeout_s: 60}}'
    with running_gateway(f"""
tiers: {{small: {{deployments: [{remote}]}}, large: {{deployments: [{remote}]}}}}
routing: {{router: embedding, threshold: {(first + second) / 2}}}
""") as gateway:
        turns = [{"role": "user", "content": question}, {"role": "assistant", "content": "By induction."},
                 {"role": "user", "content": follow_up}]
        headers, _ = chat(openai.OpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0), messages=turns)
    reason = "router-conversation" if first > second else "router"  # the max is above the midpoint
    assert (headers["x-turnout-tier"], headers["x-turnout-route-reason"]) == ("large", reason)
    assert float(headers["x-turnout-router-score"]) == pytest.approx(max(first, second), abs=1e-4)
