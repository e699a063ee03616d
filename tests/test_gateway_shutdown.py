"""A stream still running when the gateway's graceful shutdown runs out (uvicorn cancels it) ends with
an in-band error event in OpenAI's shape and a proper end of body, not a cut connection: on chat
completions `data: {"error": …}`, on the Responses API `error` then `response.failed`."""

from __future__ import annotations

import threading
from typing import Any

import openai
import pytest
from conftest import UvicornServer
from test_gateway_errors import upstream  # noqa: F401  (the fixture: "stall-after" sends a piece, then stalls)

from gateway.api import create_app
from gateway.config import parse_config

HI = [{"role": "user", "content": "hi"}]


def _read(stream: Any, started: threading.Event, seen: list[Any], outcome: list[BaseException | None]) -> None:
    try:
        for event in stream:
            seen.append(event)
            started.set()
        outcome.append(None)
    except BaseException as exc:  # what the SDK raised at the end of the stream
        outcome.append(exc)
    finally:
        started.set()


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_stream_cut_by_shutdown_ends_with_an_error_event(upstream, api):  # noqa: F811
    config = parse_config(f"""
tiers:
  small: {{deployments: [{{kind: openai, model: stall-after, url: "{upstream.base_url}"}}]}}
routing: {{router: none}}
""")
    server = UvicornServer(create_app(config)).start()
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-shutdown", max_retries=0)
    if api == "chat":
        stream = client.chat.completions.create(model="stall-after", messages=HI, stream=True)
    else:
        stream = client.responses.create(model="stall-after", input="hi", stream=True)
    started, seen, outcome = threading.Event(), [], []
    reader = threading.Thread(target=_read, args=(stream, started, seen, outcome), daemon=True)
    reader.start()
    assert started.wait(60) and seen, outcome  # the stream is under way
    server.stop()  # uvicorn waits out its graceful shutdown, then cancels the stream
    reader.join(timeout=60)
    assert outcome, "the stream never ended"
    if api == "chat":
        error = outcome[0]
        assert isinstance(error, openai.APIError) and not isinstance(error, openai.APIConnectionError), error
        assert error.body["code"] == "server_shutting_down" and "shutting down" in error.message
        assert set(error.body) == {"message", "type", "param", "code"}
    else:
        assert outcome == [None]  # the Responses stream ends with its own typed events
        assert [event.type for event in seen[-2:]] == ["error", "response.failed"]
        assert seen[-2].code == "server_shutting_down"
        assert seen[-1].response.status == "failed" and seen[-1].response.error.code == "server_shutting_down"
        numbers = [event.sequence_number for event in seen]
        assert numbers == list(range(len(seen)))
