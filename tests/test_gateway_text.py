"""Text that is not valid Unicode (a lone surrogate escape, bytes that are not UTF-8) in any field of a
chat, completion or Responses request, streamed or not, is the client's 400 `invalid_value` naming the
field, through the official openai SDK, and is never booked as a backend error. The gateway serves
an embedded engine with the cache on, where such text used to fail in the tokenizer or the cache key."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from conftest import UvicornServer
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from scrape import scrape, total

pytestmark = pytest.mark.slow

LONE = "a\ud800b"


@pytest.fixture(scope="module")
def client(embedded_gateway: UvicornServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=embedded_gateway.base_url, api_key="sk-text", max_retries=0)


# (endpoint, body, the field holding LONE, the SDK's types for a reply and a stream event)
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "chat content": ("/chat/completions", {"messages": [{"role": "user", "content": LONE}]},
                     "messages[0].content"),
    "chat content part": ("/chat/completions",
                          {"messages": [{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": [{"type": "text", "text": LONE}]}]},
                          "messages[1].content[0].text"),
    "chat stop": ("/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stop": [LONE]},
                  "stop[0]"),
    "chat pass-through extra": ("/chat/completions",
                                {"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": LONE}},
                                "metadata.k"),
    "completion prompt": ("/completions", {"prompt": LONE}, "prompt"),
    "completion user": ("/completions", {"prompt": "hi", "user": LONE}, "user"),
    "responses input": ("/responses", {"input": LONE}, "input"),
    "responses instructions": ("/responses", {"input": "hi", "instructions": LONE}, "instructions"),
    "responses input part": ("/responses",
                             {"input": [{"role": "user", "content": [{"type": "input_text", "text": LONE}]}]},
                             "input[0].content[0].text"),
}
TYPES = {"/chat/completions": (ChatCompletion, ChatCompletionChunk), "/completions": (Completion, Completion),
         "/responses": (Response, ResponseStreamEvent)}


def _escaped(body: dict[str, Any]) -> bytes:
    """The body as JSON with `\\uXXXX` escapes: the only way to put a lone surrogate on the wire."""
    return json.dumps(body, ensure_ascii=True).encode("ascii")


@pytest.mark.parametrize("temperature", [None, 0], ids=["sampled", "cacheable"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_lone_surrogate_is_400_naming_the_field(client, case, stream, temperature):
    path, fields, param = case
    body = {"model": "auto", **fields, "stream": stream}
    if temperature is not None:
        body["temperature"] = temperature
    reply_type, event_type = TYPES[path]
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(path, content=_escaped(body), cast_to=reply_type, stream=stream,
                    stream_cls=openai.Stream[event_type], options={"headers": {"content-type": "application/json"}})
    error = caught.value
    assert error.code == "invalid_value"
    assert error.param == param
    assert error.type == "invalid_request_error"
    assert f"Invalid '{param}'" in error.message and "Unicode" in error.message


@pytest.mark.parametrize("path", ["/chat/completions", "/completions", "/responses"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_invalid_utf8_is_400_naming_the_field(embedded_gateway, path, stream):
    text = {"/chat/completions": b'"messages": [{"role": "user", "content": "caf\xe9 \xff"}]',
            "/completions": b'"prompt": "caf\xe9 \xff"', "/responses": b'"input": "caf\xe9 \xff"'}[path]
    param = {"/chat/completions": "messages[0].content", "/completions": "prompt", "/responses": "input"}[path]
    body = b'{"model": "auto", "stream": ' + (b"true" if stream else b"false") + b", " + text + b"}"
    response = httpx.post(embedded_gateway.base_url + path, content=body, headers={"content-type": "application/json"},
                          timeout=60)
    assert response.status_code == 400
    assert response.json()["error"] | {"message": ""} == {"message": "", "type": "invalid_request_error",
                                                         "param": param, "code": "invalid_value"}


def test_bad_text_is_a_client_error_not_a_backend_error(embedded_gateway, client):
    with pytest.raises(openai.BadRequestError):
        client.post("/chat/completions", content=_escaped({"model": "auto", "messages": [
            {"role": "user", "content": LONE}]}), cast_to=ChatCompletion,
            options={"headers": {"content-type": "application/json"}})
    samples = scrape(embedded_gateway.url)
    assert total(samples, "turnout_backend_errors_total") == 0
    assert not [labels for labels, value in samples.get("turnout_requests_total", [])
                if labels["status"].startswith("5") and value]
    # the engine is fine afterwards: the text never reached it
    assert client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=2).choices
