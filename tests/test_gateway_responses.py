"""The Responses API (`client.responses.create`) through the official openai SDK: the same pipeline as a
chat completion (the exact cache serves one from the other), typed stream events that the SDK's stream
helper accumulates, cut-off answers reported as incomplete, and 400s that name what is not served."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from conftest import UvicornServer

from gateway.api.render_responses import ResponsesRenderer
from gateway.backends.base import BackendError
from gateway.responses_request import ResponsesRequest
from gateway.types import StreamEvent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(embedded_gateway: UvicornServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=embedded_gateway.base_url, api_key="sk-responses", max_retries=0)


def test_a_response_is_the_chat_completion_of_the_same_conversation(client, tiny_model):
    raw = client.responses.with_raw_response.create(model="auto", input="Name a fruit.", max_output_tokens=8,
                                                    temperature=0)
    response = raw.parse()
    assert (raw.headers["x-turnout-cache"], raw.headers["x-turnout-tier"]) == ("miss", "small")
    assert response.object == "response" and response.model == tiny_model and response.id.startswith("resp_")
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.output_text
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 8
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"

    chat = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=8, temperature=0)
    assert chat.headers["x-turnout-cache"] == "hit"  # one pipeline: the response's answer, cached
    assert chat.parse().choices[0].message.content == response.output_text


def test_instructions_and_earlier_turns_become_the_chat(client):
    turns = [{"role": "user", "content": "Name a colour."},
             {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
              "content": [{"type": "output_text", "text": "Blue.", "annotations": []}]},
             {"role": "user", "content": [{"type": "input_text", "text": "Another one?"}]}]
    response = client.responses.create(model="auto", instructions="Answer in one word.", input=turns,
                                       max_output_tokens=6, temperature=0)
    chat = client.chat.completions.create(model="auto", max_tokens=6, temperature=0, messages=[
        {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"}])
    assert response.output_text == chat.choices[0].message.content


def test_stream_events_in_order_and_the_sdk_helper(client):
    asked = {"model": "auto", "input": "Write one word.", "max_output_tokens": 12, "temperature": 0}
    whole = client.responses.create(**asked)
    events = list(client.responses.create(**asked, stream=True))
    kinds = [event.type for event in events]
    last = "response.completed" if whole.status == "completed" else "response.incomplete"
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          last]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert len({event.response.id for event in events if hasattr(event, "response")}) == 1
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == events[-1].response.output_text == whole.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens

    with client.responses.stream(**asked) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        if whole.status == "completed":  # the helper's final response needs response.completed, as at OpenAI
            assert stream.get_final_response().output_text == "".join(deltas) == whole.output_text
        else:
            assert "".join(deltas) == whole.output_text


@pytest.mark.parametrize(("fields", "param", "says"), [
    ({"previous_response_id": "resp_123"}, "previous_response_id", "keeps no responses"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]}, "input",
     "'input_image' are not supported"),
    ({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input", "'web_search_call'"),
    ({"tools": [{"type": "web_search"}]}, "tools", "'web_search' are not supported"),
    ({"tools": [{"type": "function", "name": "f"}]}, "tools", "not supported by the embedded engine"),
    ({"input": []}, "input", "at least one message"),
    ({"input": [{"type": {}, "content": "hi"}]}, "input", "input items of type {}"),  # found by schemathesis
    ({"input": [{"role": "user", "content": [{"type": [], "text": "hi"}]}]}, "input", "content parts of type []"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format", "plain text"),
    ({"temperature": 3}, "temperature", "less than or equal to 2"),
    ({"max_output_tokens": 0}, "max_output_tokens", "greater than or equal to 1"),
    ({"reasoning": {"effort": "high"}}, "reasoning", "do not reason"),
    ({"frequency_penalty": 1}, "frequency_penalty", "Extra inputs"),
])
def test_what_is_not_served_is_a_400_naming_it(client, fields, param, says):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="auto", input="hi", extra_body=fields)
    assert caught.value.body["param"] == param and says in caught.value.body["message"]


def test_no_response_is_stored_to_retrieve_or_delete(client):
    for call in (client.responses.retrieve, client.responses.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            call("resp_123")
        assert "keeps no responses" in caught.value.body["message"]


def test_a_failure_after_the_headers_is_an_error_event_then_response_failed():
    async def failing():
        yield StreamEvent(text="Half an ans")
        raise BackendError("upstream went away", 502)

    renderer = ResponsesRenderer("m", ResponsesRequest(model="auto", input="hi"))

    async def collect() -> list[dict]:
        return [json.loads(chunk.split(b"data: ", 1)[1]) async for chunk in renderer.sse(failing())]

    events = asyncio.run(collect())
    assert [e["type"] for e in events[-3:]] == ["response.output_text.delta", "error", "response.failed"]
    assert events[-2]["message"] == "upstream went away"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"] == "upstream went away"
    assert failed["output"][0]["content"][0]["text"] == "Half an ans"
