"""API keys end to end: `turnout keys` (a real subprocess) writes to a real Redis, the gateway reads them,
the official SDK calls with them. Create → works, list shows only a prefix, revoke → 401; unknown and
missing keys → 401, a key limited to a tier → 403 for the other one; a tenant's keys share the cache."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai
import pytest
from conftest import ROOT, TurnoutProcess, UvicornServer, wait_until_ready
from scrape import scrape, total

from gateway.api import create_app
from gateway.auth import hash_secret
from gateway.config import parse_config


@pytest.fixture(scope="module")
def gateway(tiny_model: str, engine_server: TurnoutProcess, redis_url: str):
    upstream = f'{{kind: openai, model: {tiny_model}, url: "{engine_server.base_url}"}}'
    config = parse_config(f"""
tiers:
  small: {{deployments: [{upstream}]}}
  large: {{deployments: [{upstream}]}}
routing: {{router: none}}
cache: {{redis_url: "{redis_url}", semantic_enabled: false, socket_timeout_ms: 2000, operation_timeout_ms: 5000}}
auth: {{enabled: true, keys_from: redis}}
""")  # generous Redis deadlines: these tests are about keys, and a loaded CI machine once took > 100 ms
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        yield server


def keys(redis_url: str, *args: str) -> dict | list:
    """`turnout keys ARGS --redis-url URL --json`, as an operator would run it."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", *args, "--redis-url", redis_url, "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def ask(gateway: UvicornServer, api_key: str, content: str = "Say hi.", model: str = "auto"):
    client = openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=3, temperature=0)
    return raw.headers, raw.parse()


@pytest.mark.slow
def test_key_lifecycle(gateway, redis_url):
    created = keys(redis_url, "create", "--name", "ci")
    secret = created["secret"]
    assert secret.startswith("tk-") and created["prefix"] == secret[:9] + "…"

    headers, completion = ask(gateway, secret)
    assert completion.choices[0].message.content is not None

    listed = {key["id"]: key for key in keys(redis_url, "list")}
    entry = listed[created["id"]]
    assert entry["name"] == "ci" and entry["prefix"] == secret[:9] + "…" and not entry["revoked"]
    assert secret not in json.dumps(listed) and "sha256" not in entry  # only a prefix, never the secret

    assert keys(redis_url, "revoke", created["id"])["revoked"] is True
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(gateway, secret)
    error = refused.value.body
    assert refused.value.status_code == 401 and error["code"] == "invalid_api_key"
    assert "revoked" in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert keys(redis_url, "list")[-1]["revoked"] is True


@pytest.mark.slow
def test_unknown_and_missing_keys_are_refused(gateway):
    with pytest.raises(openai.AuthenticationError) as unknown:
        ask(gateway, "tk-not-a-key-of-this-gateway")
    assert unknown.value.body["code"] == "invalid_api_key"
    assert unknown.value.body["type"] == "invalid_request_error"
    assert "tk-not-a-key-of-this-gateway" not in unknown.value.body["message"]  # echoed masked only

    missing = httpx.post(gateway.base_url + "/chat/completions", json={"model": "auto", "messages": []})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert httpx.get(gateway.base_url + "/models").status_code == 401

    failures = scrape(gateway.url)
    assert total(failures, "turnout_auth_failures_total", reason="unknown") >= 1
    assert total(failures, "turnout_auth_failures_total", reason="missing") >= 2


@pytest.mark.slow
def test_key_limited_to_a_tier(gateway, redis_url):
    secret = keys(redis_url, "create", "--name", "small-only", "--tier", "small")["secret"]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(gateway, secret, model="large")
    assert refused.value.status_code == 403 and refused.value.body["code"] == "tier_not_allowed"
    headers, _ = ask(gateway, secret)  # `auto` is pinned to the tier the key may use
    assert headers["x-turnout-tier"] == "small"
    assert headers["x-turnout-route-reason"] == "key-tiers"  # not reported as a forced header
    assert total(scrape(gateway.url), "turnout_auth_failures_total", reason="tier") >= 1


@pytest.mark.slow
def test_keys_of_one_tenant_share_the_cache(gateway, redis_url):
    alice, bob = (keys(redis_url, "create", "--name", name, "--tenant", "acme")["secret"] for name in ("a", "b"))
    outsider = keys(redis_url, "create", "--name", "other")["secret"]
    assert ask(gateway, alice, "Name a planet.")[0]["x-turnout-cache"] == "miss"
    assert ask(gateway, bob, "Name a planet.")[0]["x-turnout-cache"] == "hit"
    assert ask(gateway, outsider, "Name a planet.")[0]["x-turnout-cache"] == "miss"


def test_create_prints_a_config_entry_for_keys_from_config(tmp_path):
    """With `keys_from: config`, `turnout keys create` prints the secret once and an entry holding only its
    hash, which pasted under auth.keys makes a valid config that accepts that secret."""
    tiers = 'tiers: {small: {deployments: [{kind: openai, model: m, url: "http://127.0.0.1:9/v1"}]}}\n'
    (tmp_path / "turnout.yaml").write_text(tiers)
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--name", "ops", "--tier", "large",
                           "--config", str(tmp_path / "turnout.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    secret = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("secret"))
    entry = done.stdout.split("restart the gateway:\n", 1)[1].strip()
    assert secret not in entry
    pasted = tiers + "auth:\n  enabled: true\n  keys:\n" + "".join(f"    {line}\n" for line in entry.splitlines())
    (key,) = parse_config(pasted).auth.keys
    assert key.sha256 == hash_secret(secret) and key.name == "ops" and key.tiers == ["large"]
