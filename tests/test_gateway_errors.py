"""Failure paths through the official openai SDK: remote backends that are down, slow, broken or busy
(a small misbehaving OpenAI-compatible server), the gateway's own deadline, and an overloaded
embedded engine. Also the HTTP backend's pass-through of fields and of tool-call streams."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import openai
import pytest
from conftest import UvicornServer, free_port, wait_until_ready
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gateway.api import create_app
from gateway.config import parse_config

STALL_S = 30


# --- a misbehaving upstream: behaviour chosen by the `model` it is asked for -----------------------

def _chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": choices}
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


async def _upstream_chat(request: Request):
    body = await request.json()
    model = body["model"]
    if model == "stall-before":
        await asyncio.sleep(STALL_S)
    if model == "boom":
        return JSONResponse({"error": {"message": "kaboom", "type": "server_error"}}, status_code=500)
    if model == "busy":
        return JSONResponse({"error": {"message": "slow down", "type": "rate_limit", "code": "rate_limited"}},
                            status_code=429)

    async def stream():
        if model == "refused-in-stream":  # vLLM refuses some requests (too many top_logprobs) this way
            error = {"message": "Requested sample logprobs of 25, which is greater than max allowed: 20",
                     "type": "BadRequestError", "param": "logprobs", "code": 400}
            yield f"data: {json.dumps({'error': error})}\n\ndata: [DONE]\n\n".encode()
            return
        if model == "stall-after":
            yield _chunk({"role": "assistant", "content": "partial"})
            await asyncio.sleep(STALL_S)
        # echo: report which fields arrived (echo-chat: the whole request), then a tool call split across
        # two deltas
        received = sorted(key for key in body if key not in ("model", "messages"))
        yield _chunk({"role": "assistant", "content": ""})
        yield _chunk({"content": json.dumps(body if model == "echo-chat" else received)})
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": '}}
        yield _chunk({"tool_calls": [call]})
        yield _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]})
        yield _chunk({}, finish="tool_calls")
        yield _chunk(usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


async def _upstream_models(_: Request):
    return JSONResponse({"object": "list", "data": []})


@pytest.fixture(scope="module")
def upstream():
    app = Starlette(routes=[Route("/v1/chat/completions", _upstream_chat, methods=["POST"]),
                            Route("/v1/models", _upstream_models)])
    server = UvicornServer(app).start(ready_path="/v1/models")
    yield server
    server.stop()


def _remote_gateway_config(upstream_url: str, request_timeout_s: float = 60) -> str:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    return f"""
server: {{request_timeout_s: {request_timeout_s}}}
tiers:
  small:
    deployments: [{{kind: openai, model: dead, url: "{dead}", connect_timeout_s: 2}}]
  large:
    deployments:
      - {{kind: openai, model: stall-before, url: "{upstream_url}", first_byte_timeout_s: 0.5}}
      - {{kind: openai, model: stall-after, url: "{upstream_url}", timeout_s: 0.5}}
      - {{kind: openai, model: boom, url: "{upstream_url}"}}
      - {{kind: openai, model: busy, url: "{upstream_url}"}}
      - {{kind: openai, model: echo, url: "{upstream_url}"}}
      - {{kind: openai, model: echo-chat, url: "{upstream_url}"}}
      - {{kind: openai, model: refused-in-stream, url: "{upstream_url}"}}
routing: {{router: none}}
"""


@pytest.fixture(scope="module")
def gateway(upstream: UvicornServer):
    app = create_app(parse_config(_remote_gateway_config(upstream.base_url)))
    with UvicornServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: UvicornServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0)


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("model", "status"), [("dead", 502), ("boom", 502), ("stall-before", 504)])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures(client, model, status, stream):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=model, messages=HI, stream=stream)
    assert caught.value.status_code == status
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert caught.value.response.headers["x-turnout-model"] == model


def test_upstream_4xx_keeps_status_and_message(client):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="busy", messages=HI)
    assert caught.value.body["message"] == "slow down"
    assert caught.value.body["code"] == "rate_limited"


@pytest.mark.parametrize("stream", [False, True])
def test_a_refusal_in_the_first_stream_event_keeps_its_status(client, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="refused-in-stream", messages=HI, stream=stream)
    assert caught.value.body["message"].startswith("Requested sample logprobs of 25")
    assert caught.value.body["param"] == "logprobs"


def test_the_cache_salt_sent_upstream_is_a_digest_of_the_scope():
    """vLLM refuses a cache_salt with '/' or '@' in it or over 128 characters; a scope may be any of those."""
    from gateway.backends.openai_http import upstream_body
    from gateway.types import BackendRequest

    def salt(scope: str) -> str:
        request = BackendRequest(kind="chat", model="m", messages=HI, params={}, cache_scope=scope)
        return upstream_body(request, "m", cache_salt=True)["cache_salt"]

    scope = "tenant-ops@example.com/" + "user-42" * 30
    assert re.fullmatch(r"turnout-[0-9a-f]{32}", salt(scope))
    assert salt(scope) == salt(scope) != salt("tenant-ops@example.com")


def test_stream_failing_midway_ends_with_error_event(client):
    stream = client.chat.completions.create(model="stall-after", messages=HI, stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in received) == "partial"
    assert "timed out" in str(caught.value.message) or "timed out" in json.dumps(caught.value.body)


def test_non_stream_failing_midway_is_504(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="stall-after", messages=HI)
    assert caught.value.status_code == 504


def test_unknown_fields_pass_through_and_tool_calls_assemble(client):
    completion = client.chat.completions.create(
        model="echo", messages=HI, max_tokens=5, logprobs=True, n=1,
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        extra_body={"top_k": 7, "repetition_penalty": 1.1})
    received = json.loads(completion.choices[0].message.content)
    for field in ("tools", "logprobs", "n", "top_k", "repetition_penalty", "max_tokens", "stream"):
        assert field in received
    call = completion.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "lookup", '{"q": "x"}')
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.total_tokens == 8


def test_tool_call_deltas_stream_through(client):
    chunks = list(client.chat.completions.create(model="echo", messages=HI, stream=True))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert "".join(d[0].function.arguments for d in deltas) == '{"q": "x"}'


LOOKUP = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}


def test_responses_api_function_calls_over_a_remote_backend(client):
    turns = [{"role": "user", "content": "find x"},
             {"type": "function_call", "call_id": "call_0", "name": "lookup", "arguments": '{"q": "w"}'},
             {"type": "function_call_output", "call_id": "call_0", "output": "nothing"}]
    response = client.responses.create(model="echo-chat", input=turns, tools=[LOOKUP],
                                       tool_choice={"type": "function", "name": "lookup"}, max_output_tokens=9)
    sent = json.loads(response.output[0].content[0].text)  # what the upstream received: a chat request
    assert sent["messages"] == [
        {"role": "user", "content": "find x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "w"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "nothing"}]
    assert sent["tools"] == [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert sent["max_tokens"] == 9
    call = response.output[1]
    assert (call.type, call.call_id, call.name, call.arguments) == ("function_call", "call_1", "lookup", '{"q": "x"}')
    assert response.status == "completed" and response.usage.total_tokens == 8


def test_responses_api_streams_function_call_arguments(client):
    events = list(client.responses.create(model="echo", input="find x", tools=[LOOKUP], stream=True))
    kinds = [event.type for event in events]
    assert kinds.count("response.output_item.added") == 2 and kinds.count("response.output_item.done") == 2
    arguments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(arguments) == '{"q": "x"}'
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done[0].arguments == '{"q": "x"}' and done[0].output_index == 1
    with client.responses.stream(model="echo", input="find x", tools=[LOOKUP]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output[1].arguments == '{"q": "x"}' and final.output[1].name == "lookup"


def test_ready_reports_the_dead_backend(gateway):
    assert httpx.get(gateway.url + "/health").status_code == 200
    ready = httpx.get(gateway.url + "/ready")
    assert ready.status_code == 503
    backends = ready.json()["dependencies"]
    assert [name for name, ok in backends.items() if not ok] == [n for n in backends if "dead" in n]


def test_gateway_deadline_is_504(upstream):
    app = create_app(parse_config(_remote_gateway_config(upstream.base_url, request_timeout_s=0.5)))
    with UvicornServer(app) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="stall-after", messages=HI, stream=False)
        assert caught.value.status_code == 504
        assert "timeout" in caught.value.body["message"]


# --- an overloaded embedded engine ---------------------------------------------------------------

@pytest.mark.slow
async def test_overloaded_engine_is_503(tiny_model):
    config = parse_config(f"""
tiers:
  small:
    deployments: [{{kind: embedded, model: {tiny_model}, max_batch_size: 1, max_waiting: 1}}]
routing: {{router: none}}
""")
    with UvicornServer(create_app(config)) as server:
        await asyncio.to_thread(wait_until_ready, server.url)
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "Count from one to one hundred."}]
        results = await asyncio.gather(
            *(client.chat.completions.create(model=tiny_model, messages=messages, max_tokens=24) for _ in range(8)),
            return_exceptions=True)
    overloaded = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 503]
    served = [r for r in results if not isinstance(r, Exception)]
    assert overloaded and served
    assert len(overloaded) + len(served) == len(results)
    assert overloaded[0].body["type"] == "overloaded_error"
