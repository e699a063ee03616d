"""Schemathesis against the running gateway's own /openapi.json: generated requests, valid (positive)
and invalid (negative), to every operation. Whatever arrives, the gateway never answers 5xx, every
4xx is in OpenAI's error shape, and no stream ends with a server error event. The upstream is
bench/upstream.py (instant), the cache a real Redis, so generated input also reaches cache keys."""

from __future__ import annotations

import json

import pytest
from conftest import UvicornServer
from test_reliability import OPENAI_ERROR_FIELDS, cached_gateway, instant_upstream  # noqa: F401 (fixtures)

schemathesis = pytest.importorskip("schemathesis")  # the `test` extra; skipped where it is not installed
hypothesis = pytest.importorskip("hypothesis")
requests = pytest.importorskip("requests")
GenerationMode = schemathesis.GenerationMode

EXAMPLES_PER_OPERATION = 60


@pytest.fixture(scope="module")
def gateway(cached_gateway) -> UvicornServer:  # noqa: F811
    """The reliability tests' gateway: instant upstream, cache on (real Redis)."""
    return cached_gateway


def problems(response) -> list[str]:
    """What is wrong with one answer, if anything."""
    status = response.status_code
    if status >= 500:
        return [f"{status}: {response.text[:300]}"]
    if status >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return [f"{status} not in OpenAI's error shape: {response.text[:300]}"]
        return [] if set(error) == OPENAI_ERROR_FIELDS else [f"{status} error fields {sorted(error)}"]
    if (response.headers.get("content-type") or [""])[0].startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data: {") and '"error"' in line:
                data = json.loads(line[6:])
                error = data if data.get("type") == "error" else data.get("error") or {}  # Responses API / chat
                if "server_error" in (error.get("type"), error.get("code")):
                    return [f"stream ended with a server error: {line[:300]}"]
    return []


def exercise(operation, mode, base_url: str, session, found: dict[str, list[str]]) -> int:
    """Up to EXAMPLES_PER_OPERATION generated cases of one operation; problems are collected in `found`.
    Returns how many requests were sent."""
    sent = 0

    @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def call(case) -> None:
        nonlocal sent
        sent += 1
        response = case.call(base_url=base_url, session=session, timeout=30,
                             headers={"Authorization": "Bearer sk-fuzz"})
        for problem in problems(response):
            found.setdefault(operation.label, []).append(f"{problem}\n    request body: {str(case.body)[:300]}")

    try:
        call()
    except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (GET /health takes no input)
        assert mode == GenerationMode.NEGATIVE
    return sent


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_generated_requests_never_5xx(gateway, mode):
    schema = schemathesis.openapi.from_url(gateway.url + "/openapi.json")
    session = requests.Session()
    found: dict[str, list[str]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in operations)

    sent = {operation.label: exercise(operation, mode, gateway.url, session, found) for operation in operations}
    print(f"\n{mode.value}: {sent}")
    assert sent["POST /v1/chat/completions"] >= EXAMPLES_PER_OPERATION // 2
    assert not found, "\n".join(f"{label}: {items[0]} ({len(items)} cases)" for label, items in found.items())
