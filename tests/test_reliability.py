"""Reliability under faults, with real processes on loopback: a Redis killed under load, a model server
killed mid-stream, a frozen backend, and hostile request bodies. Bounded in requests and time.

The upstream is bench/upstream.py (an OpenAI-compatible server that answers instantly) in its own
process; the backend killed mid-stream is a real `turnout engine serve`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import TurnoutProcess, UvicornServer, wait_until_ready
from redis_proc import running_redis

from gateway.api import create_app
from gateway.config import parse_config

HANG_GUARD_S = 10.0  # a client read timeout: the assertions are about outcomes, never about speed
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}


def instant_upstream_process() -> TurnoutProcess:
    """bench/upstream.py as a child process, started from the repository root like the CLI."""
    process = TurnoutProcess()
    process.argv = [sys.executable, "-m", "bench.upstream", "--port", str(process.port)]
    return process


@pytest.fixture(scope="module")
def instant_upstream() -> Iterator[TurnoutProcess]:
    process = instant_upstream_process().start(ready_path="/health", timeout_s=60)
    yield process
    process.stop()


def gateway_config(*deployments: tuple[str, str], cache: str | None = None,
                   first_byte_timeout_s: float = 2) -> str:
    """A one-tier config whose small tier has the given (model, base_url) deployments."""
    lines = "\n".join(f'      - {{kind: openai, model: "{model}", url: "{url}", '
                      f'first_byte_timeout_s: {first_byte_timeout_s}}}' for model, url in deployments)
    cache_line = f"cache: {cache}" if cache else ""
    return f"tiers:\n  small:\n    deployments:\n{lines}\nrouting: {{router: none}}\n{cache_line}\n"


def assert_openai_error(response: httpx.Response, statuses: range = range(400, 500)) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert set(response.json()["error"]) == OPENAI_ERROR_FIELDS, response.text[:300]


def assert_refused_or_served(response: httpx.Response) -> None:
    """A 4xx in OpenAI's shape, or a 200 that is a whole answer (no error event inside a stream)."""
    if response.status_code != 200:
        assert_openai_error(response)
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert b'"error"' not in response.content and response.content.endswith(b"data: [DONE]\n\n")
    else:
        assert response.json()["choices"]


def chat(content: str, **fields: object) -> dict:
    return {"model": "small", "messages": [{"role": "user", "content": content}], "temperature": 0, **fields}


# --- Redis killed under load --------------------------------------------------------------------

async def test_redis_killed_under_load_fails_no_request(instant_upstream, tmp_path):
    """Cache on, a real redis-server SIGKILLed after a third of the requests: every request still
    succeeds (the cache is bypassed), and once Redis is back the cache is used again."""
    total, kill_after, concurrency = 300, 100, 8
    with running_redis(tmp_path / "redis") as redis:
        config = gateway_config(("instant", instant_upstream.base_url),
                                cache=f'{{redis_url: "{redis.url}", semantic_enabled: false, breaker_cooldown_s: 0.5}}')
        with UvicornServer(create_app(parse_config(config))) as gateway:
            await asyncio.to_thread(wait_until_ready, gateway.url)
            statuses: Counter[str] = Counter()
            cache_before: Counter[str] = Counter()
            cache_after: Counter[str] = Counter()
            failures: list[str] = []
            sent = 0
            killed = False

            async def worker(client: httpx.AsyncClient) -> None:
                nonlocal sent, killed
                while sent < total:
                    index = sent
                    sent += 1
                    stream = index % 3 == 0
                    try:
                        response = await client.post("/v1/chat/completions",
                                                     json=chat(f"question {index % 40}", stream=stream))
                        statuses[str(response.status_code)] += 1
                        if response.status_code != 200 or b'"error"' in response.content:
                            failures.append(f"{response.status_code} {response.text[:200]}")
                        (cache_after if killed else cache_before)[response.headers.get("x-turnout-cache")] += 1
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    if sent >= kill_after and not killed:
                        killed = True
                        redis.kill()

            async with httpx.AsyncClient(base_url=gateway.url, timeout=HANG_GUARD_S) as client:
                await asyncio.gather(*(worker(client) for _ in range(concurrency)))
                assert failures == []
                assert statuses == {"200": total}
                assert cache_before["hit"] > 0
                assert cache_after["bypass"] > 0

                redis.start()  # same address: the gateway reconnects on its own once the breaker lets it
                recovered = None
                for _ in range(50):
                    response = await client.post("/v1/chat/completions", json=chat("after the restart"))
                    assert response.status_code == 200
                    recovered = response.headers.get("x-turnout-cache")
                    if recovered in ("miss", "hit"):
                        break
                    await asyncio.sleep(0.2)
                assert recovered in ("miss", "hit")


# --- a model server killed mid-stream -----------------------------------------------------------

@pytest.mark.slow
def test_backend_killed_mid_stream(tiny_model, instant_upstream):
    """`turnout engine serve` SIGKILLed while streaming: the client gets an error event (no hang), then
    requests for the tier fail over to the tier's other deployment, and the dead one's model id is 502."""
    engine = TurnoutProcess("engine", "serve", "--model", tiny_model, "--max-batch-size", "2").start()
    try:
        config = gateway_config((tiny_model, engine.base_url), ("instant", instant_upstream.base_url),
                                first_byte_timeout_s=120)  # a CPU model's first token, on a busy machine
        with UvicornServer(create_app(parse_config(config))) as gateway:
            client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0,
                                   timeout=HANG_GUARD_S)
            stream = client.chat.completions.create(
                model=tiny_model, stream=True, max_tokens=512, temperature=0,
                messages=[{"role": "user", "content": "Count from 1 to 500, separated by commas."}])
            received, killed_at = [], None
            with pytest.raises(openai.APIError) as caught:
                for chunk in stream:
                    received.append(chunk)
                    if killed_at is None and chunk.choices and chunk.choices[0].delta.content:
                        engine.process.kill()
                        killed_at = time.monotonic()
            seconds = time.monotonic() - killed_at
            assert not isinstance(caught.value, openai.APIConnectionError), "the stream hung or was cut"
            print(f"\nerror event {seconds * 1000:.0f} ms after the kill: {caught.value.message}")
            engine.process.wait(timeout=10)

            for stream_flag in (False, True, False, False):
                raw = client.chat.completions.with_raw_response.create(
                    model="small", stream=stream_flag, messages=[{"role": "user", "content": "hi"}])
                assert raw.headers["x-turnout-model"] == "instant"
                raw.parse()

            with pytest.raises(openai.APIStatusError) as pinned:
                client.chat.completions.create(model=tiny_model, messages=[{"role": "user", "content": "hi"}])
            assert pinned.value.status_code == 502
            assert set(pinned.value.body) == OPENAI_ERROR_FIELDS
    finally:
        engine.stop()


# --- a frozen backend ---------------------------------------------------------------------------

def test_frozen_backend_is_504_then_recovers():
    """The upstream process stopped (SIGSTOP: connections accepted by the kernel, nothing answered)
    is a 504 in OpenAI's shape, streamed or not; once it resumes, requests succeed again."""
    upstream = instant_upstream_process().start(ready_path="/health", timeout_s=60)
    try:
        config = gateway_config(("instant", upstream.base_url))
        with UvicornServer(create_app(parse_config(config))) as gateway, \
                httpx.Client(base_url=gateway.url, timeout=HANG_GUARD_S * 3) as client:
            assert client.post("/v1/chat/completions", json=chat("warm")).status_code == 200
            os.kill(upstream.process.pid, signal.SIGSTOP)
            try:
                for stream in (False, True):
                    response = client.post("/v1/chat/completions", json=chat("frozen", stream=stream))
                    assert_openai_error(response, statuses=range(504, 505))
            finally:
                os.kill(upstream.process.pid, signal.SIGCONT)
            for stream in (False, True):
                response = client.post("/v1/chat/completions", json=chat("thawed", stream=stream))
                assert response.status_code == 200, response.text[:300]
    finally:
        upstream.stop()


# --- hostile bodies ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cached_gateway(instant_upstream, tmp_path_factory) -> Iterator[UvicornServer]:
    """Cache on (real Redis), so odd input also goes through cache keys and stored entries."""
    with running_redis(tmp_path_factory.mktemp("redis")) as redis:
        config = gateway_config(("instant", instant_upstream.base_url),
                                cache=f'{{redis_url: "{redis.url}", semantic_enabled: false}}')
        with UvicornServer(create_app(parse_config(config))) as gateway:
            wait_until_ready(gateway.url)
            yield gateway


def _nested(depth: int) -> bytes:
    return b'{"model": "small", "messages": [{"role": "user", "content": "hi"}], "x": ' + \
        b"[" * depth + b"]" * depth + b"}"


MALFORMED: dict[str, bytes] = {
    "truncated JSON": b'{"model": "small", "messages": [',
    "not JSON": b"model=small&messages=hi",
    "empty body": b"",
    "JSON array": b"[]",
    "JSON string": b'"hello"',
    "JSON null": b"null",
    "invalid UTF-8": b'{"model": "small", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "NaN temperature": b'{"model": "small", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    "nested 100k deep": _nested(100_000),
}

WRONG_TYPES: dict[str, dict] = {
    "model is a number": {"model": 5, "messages": [{"role": "user", "content": "hi"}]},
    "model is empty": {"model": "", "messages": [{"role": "user", "content": "hi"}]},
    "messages is a string": {"model": "small", "messages": "hi"},
    "messages is empty": {"model": "small", "messages": []},
    "message is a string": {"model": "small", "messages": ["hi"]},
    "unknown role": {"model": "small", "messages": [{"role": "robot", "content": "hi"}]},
    "content is a number": {"model": "small", "messages": [{"role": "user", "content": 5}]},
    "max_tokens is text": chat("hi", max_tokens="ten"),
    "max_tokens negative": chat("hi", max_tokens=-1),
    "temperature is text": chat("hi", temperature="hot"),
    "temperature 1e308": chat("hi", temperature=1e308),
    "stop is numbers": chat("hi", stop=[1, 2]),
    "five stops": chat("hi", stop=["a", "b", "c", "d", "e"]),
    "n is huge": chat("hi", n=10**30),
    "stream_options is a list": chat("hi", stream=True, stream_options=[1]),
    "unknown model": {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
}


# Refusing these is left to the backend (vLLM: 400) or to pydantic's lax coercion; either outcome is fine.
UPSTREAM_DECIDES: dict[str, dict] = {
    "max_tokens 2**70": chat("hi", max_tokens=2**70),
    "unknown field": chat("hi", frobnicate={"deep": [1, 2, {"x": None}]}),
    "tools of the wrong shape": chat("hi", tools="none"),
    "stream is text": chat("hi", stream="yes"),  # pydantic's lax mode reads "yes" as true
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_body_is_400(cached_gateway, body):
    response = httpx.post(cached_gateway.url + "/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"}, timeout=HANG_GUARD_S)
    assert response.status_code == 400
    assert_openai_error(response)


@pytest.mark.parametrize("body", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_types_are_4xx_in_openai_shape(cached_gateway, body):
    response = httpx.post(cached_gateway.url + "/v1/chat/completions", json=body, timeout=HANG_GUARD_S)
    assert_openai_error(response)


@pytest.mark.parametrize("body", UPSTREAM_DECIDES.values(), ids=UPSTREAM_DECIDES.keys())
def test_odd_values_are_refused_or_served(cached_gateway, body):
    assert_refused_or_served(httpx.post(cached_gateway.url + "/v1/chat/completions", json=body,
                                        timeout=HANG_GUARD_S))


def test_huge_body_is_413(cached_gateway):
    body = json.dumps(chat("x" * (10 * 2**20))).encode()
    response = httpx.post(cached_gateway.url + "/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"}, timeout=HANG_GUARD_S * 3)
    assert response.status_code == 413
    assert_openai_error(response)


UNICODE = {
    "NUL": "before\x00after",
    "RTL override": "\u202eabc\u202c and עברית مرحبا",
    "emoji ZWJ sequence": "family: 👨\u200d👩\u200d👧\u200d👦 flags 🇫🇷🇯🇵",
    "combining marks": "Z\u0351\u0364a\u036b\u0350l\u0367go",
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "BOM": "\ufeffhello",
}


@pytest.mark.parametrize("text", UNICODE.values(), ids=UNICODE.keys())
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_unicode_edge_cases_are_served_and_cached(cached_gateway, text, stream):
    with httpx.Client(base_url=cached_gateway.url, timeout=HANG_GUARD_S) as client:
        first = client.post("/v1/chat/completions", json=chat(f"{text} {stream}", stream=stream))
        assert first.status_code == 200, first.text[:300]
        again = client.post("/v1/chat/completions", json=chat(f"{text} {stream}", stream=stream))
        assert again.status_code == 200
        assert again.headers["x-turnout-cache"] == "hit"
        assert b'"error"' not in again.content


@pytest.mark.parametrize("where", ["content", "model", "stop", "tier header"])
def test_lone_surrogates_are_400_or_served(cached_gateway, where):
    """JSON may spell an unpaired surrogate (\\ud800), which no UTF-8 encoder accepts."""
    lone = "\\ud800x\\udfff"
    fields = {"content": f'"messages": [{{"role": "user", "content": "{lone}"}}], "model": "small"',
              "model": f'"messages": [{{"role": "user", "content": "hi"}}], "model": "{lone}"',
              "stop": f'"messages": [{{"role": "user", "content": "hi"}}], "model": "small", "stop": "{lone}"',
              "tier header": '"messages": [{"role": "user", "content": "hi"}], "model": "small"'}
    headers = {"content-type": "application/json"}
    if where == "tier header":
        headers["x-turnout-tier"] = "sm\u00e1ll\ud800".encode("utf-8", "surrogatepass")
    for stream in ("false", "true"):
        body = ("{" + fields[where] + f', "temperature": 0, "stream": {stream}}}').encode()
        response = httpx.post(cached_gateway.url + "/v1/chat/completions", content=body, headers=headers,
                              timeout=HANG_GUARD_S)
        assert_refused_or_served(response)


def test_completions_endpoint_rejects_hostile_prompts_cleanly(cached_gateway):
    for prompt in (["a", "b"], [], 5, None, {"text": "hi"}, "\x00" * 1000):
        response = httpx.post(cached_gateway.url + "/v1/completions",
                              json={"model": "small", "prompt": prompt}, timeout=HANG_GUARD_S)
        assert_refused_or_served(response)

