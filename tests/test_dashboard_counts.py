"""The dashboard's "failed" is 5xx only (the gateway or a backend failed); every 4xx, whether the
pipeline refused it (unknown model) or the request schema did (a bad value, text that is not
Unicode), is a client error, counted apart, and every request is one of ok, failed, client error.
Savings without prices are large-tier tokens avoided."""

from __future__ import annotations

import httpx
import pytest
from conftest import UvicornServer
from test_reliability import instant_upstream, instant_upstream_process  # noqa: F401  (the fixture)

from bench.upstream import USAGE
from gateway.api import create_app
from gateway.config import parse_config


@pytest.fixture(scope="module")
def gateway(instant_upstream):  # noqa: F811
    url = instant_upstream.base_url
    config = parse_config(f"""
tiers:
  small: {{deployments: [{{kind: openai, model: instant, url: "{url}"}}]}}
  large: {{deployments: [{{kind: openai, model: fail, url: "{url}"}}]}}
routing: {{router: none, fallback: false}}
""")
    with UvicornServer(create_app(config)) as server:
        yield server


def test_failed_is_5xx_and_client_errors_are_every_4xx(gateway):
    hi = [{"role": "user", "content": "hi"}]
    bodies = [
        ({"model": "instant", "messages": hi}, 200),
        ({"model": "fail", "messages": hi}, 502),  # the backend's failure
        ({"model": "no-such-model", "messages": hi}, 404),  # refused by the pipeline (booked by the meter)
        ({"model": "instant", "messages": hi, "max_tokens": -1}, 400),  # refused by the schema
    ]
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        for body, status in bodies:
            assert client.post("/v1/chat/completions", json=body).status_code == status
        lone = b'{"model": "instant", "prompt": "\\ud800"}'  # refused by the schema too
        assert client.post("/v1/completions", content=lone,
                           headers={"content-type": "application/json"}).status_code == 400
        totals = client.get("/dashboard/data").json()["totals"]
        series = client.get("/dashboard/data").json()["series"]
    assert (totals["requests"], totals["ok"], totals["failed"], totals["client_errors"]) == (5, 1, 1, 3)
    assert sum(p["requests"] for p in series) == 5
    # no `pricing:`: $0.00 says nothing, the tokens the large tier did not have to process do
    assert (totals["priced"], totals["savings_usd"]) == (False, 0.0)
    assert totals["large_tokens_avoided"] == USAGE["total_tokens"]  # the one answer, from the small tier
    assert (sum(p["failed"] for p in series), sum(p["client_errors"] for p in series)) == (1, 3)
