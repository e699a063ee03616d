"""A scripted OpenAI-compatible upstream and a gateway in front of it, for the cascade and shadow tests.

The upstream answers `model`'s text word by word over real HTTP, with the token logprobs its model name
asks for (sure, unsure, none); a test file subclasses it for other behaviour (a judge, held answers) and
serves it from its own module-scoped fixture (`with ScriptedUpstream() as upstream: yield upstream`).
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import openai
from conftest import UvicornServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gateway.api import create_app
from gateway.config import parse_config

TOKEN_LOGPROB = {"small-sure": -0.05, "small-unsure": -3.0}  # confidence exp(-0.05) = 0.95, exp(-3) = 0.05
ANSWER = ["The", " answer", " is", " here", "."]


class ScriptedUpstream:
    """Answers `model`'s text word by word, with chat logprobs when asked for them and its model has some;
    keeps every request body it received. Served from `with` (or start/stop) until the block ends."""

    def __init__(self) -> None:
        self.bodies: collections.defaultdict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                Route("/v1/models", lambda _: JSONResponse({"object": "list", "data": []}))])
        self.server = UvicornServer(app)

    def start(self) -> None:
        self.server.start(ready_path="/v1/models")

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _chat(self, request: Request) -> StreamingResponse:
        body = await request.json()
        model = body["model"]
        self.bodies[model].append(body)
        logprob = TOKEN_LOGPROB.get(model) if body.get("logprobs") else None
        return stream_reply([f"{model}:{ANSWER[0]}", *ANSWER[1:]], logprob)

    def asked_logprobs(self, model: str) -> list[bool]:
        return [bool(body.get("logprobs")) for body in self.bodies[model]]


def stream_reply(texts: list[str], logprob: float | None = None) -> StreamingResponse:
    """An OpenAI chat stream of `texts`, each token with `logprob` when given."""
    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: dict[str, Any] | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n".encode()

    async def stream() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        for text in texts:
            logprobs = None if logprob is None else {"content": [{"token": text, "logprob": logprob,
                                                                  "bytes": list(text.encode()), "top_logprobs": []}]}
            yield chunk({"content": text}, logprobs=logprobs)
        yield chunk({}, finish="stop")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


def deployment(url: str, model: str) -> str:
    """One `kind: openai` deployment of `model` served at `url`, as turnout.yaml flow text."""
    return f'{{kind: openai, model: {model}, url: "{url}"}}'


def two_tiers(small: str, large: str) -> str:
    """turnout.yaml's `tiers:` with one deployment each (flow text, as `deployment` writes it)."""
    return f"tiers:\n  small:\n    deployments: [{small}]\n  large:\n    deployments: [{large}]\n"


@contextlib.contextmanager
def gateway(text: str) -> Iterator[tuple[UvicornServer, openai.OpenAI]]:
    """A gateway built from turnout.yaml `text`, and an SDK client of it, until the block ends."""
    with UvicornServer(create_app(parse_config(text))) as server:
        yield server, openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
