"""The redis shadow sink (`routing.shadow.sink: redis`): outcomes in a capped Redis Stream per tenant, written
by a real gateway under uvicorn (asked through the official openai SDK, test_shadow's judging upstream)
into a real redis-server, and read back by `turnout router train|eval --data redis://...?tenant=T`."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from conftest import wait_until_ready
from redis_proc import redis_server, running_redis
from scrape import scrape, total
from test_cascade import gateway
from test_router_cli import EASY, HARD
from test_shadow import WAIT_S, ask, config_text, upstream

from gateway.cache.keys import TenantKeys
from gateway.cache.redis_server import free_port
from gateway.cli import main
from gateway.config import ConfigError, parse_config
from gateway.handle import Handle
from gateway.metrics import Metrics
from gateway.pipeline import RequestContext
from gateway.shadow_read import read_stream
from gateway.shadow_sink import shadow_sink
from gateway.state_store import StateStore
from router_models import load_router
from router_models.data import outcomes_from_records, shown_url

__all__ = ["redis_server", "upstream"]  # fixtures, used by name

REPLY = "small-sure:The answer is here."
ONE, TWO = (RequestContext(api_key=key).tenant for key in ("key-one", "key-two"))  # auth off: a tenant per token


def redis_config(upstream_url: str, redis_url: str, shadow: str = "") -> str:
    return (config_text(upstream_url, "redis", shadow=shadow)  # type: ignore[arg-type]  # the sink's name
            + f"cache: {{redis_url: '{redis_url}', semantic_enabled: false}}\n")


def stream_url(redis_url: str, tenant: str) -> str:
    return f"{redis_url}?tenant={quote(tenant)}"


def records_when(redis_url: str, tenant: str, count: int) -> list[dict]:
    """The tenant's stream, once it holds `count` records."""
    key = TenantKeys.for_tenant(tenant).shadow
    deadline = time.monotonic() + WAIT_S
    with redis.Redis.from_url(redis_url) as client:
        while client.xlen(key) < count:
            assert time.monotonic() < deadline, f"{tenant}: only {client.xlen(key)} records after {WAIT_S}s"
            time.sleep(0.05)
    return read_stream(stream_url(redis_url, tenant)).rows


def serving(server) -> None:
    """Until the cache, and with it the gateway's Redis for the sink, is connected."""
    wait_until_ready(server.url, "/ready", WAIT_S, alive=server.thread.is_alive)


def test_each_tenants_outcomes_land_in_its_own_stream(upstream, redis_server):
    with gateway(redis_config(upstream.server.base_url, redis_server.url, ", stream_maxlen: 1000")) as (server, _):
        serving(server)
        assert ask(server, "What is 2+2?", api_key="key-one") == REPLY
        assert ask(server, "Name a colour.", api_key="key-two") == REPLY
        one, two = records_when(redis_server.url, ONE, 1), records_when(redis_server.url, TWO, 1)
        assert total(scrape(server.url), "turnout_shadow_labels_total", outcome="labelled") == 2
    assert [row["prompt"] for row in one] == ["What is 2+2?"] and [row["prompt"] for row in two] == ["Name a colour."]
    for (row,) in (one, two):  # the jsonl sink's shape
        assert (row["weak_quality"], row["strong_quality"]) == (0.0, 1.0)  # the judge preferred large both ways
        assert row["weak_answer"] == REPLY and row["strong_answer"] == "large-model:The answer is here."
        assert row["judge_verdicts"] == ["strong", "strong"] and row["source"] == "shadow"
        assert row["messages"] == [{"role": "user", "content": row["prompt"]}]
    with redis.Redis.from_url(redis_server.url) as client:
        streams = set(client.scan_iter(match="turnout:*:shadow"))
        assert streams == {TenantKeys.for_tenant(t).shadow.encode() for t in (ONE, TWO)}
        assert all(ONE.encode() not in key and b"key-one" not in key for key in client.scan_iter())  # ids hashed
    data = outcomes_from_records(read_stream(stream_url(redis_server.url, ONE)))  # what `router train` reads
    assert data.prompts == ["What is 2+2?"] and data.weak_column == "weak_quality"


def test_no_store_requests_are_not_recorded(upstream, redis_server):
    with gateway(redis_config(upstream.server.base_url, redis_server.url)) as (server, _):
        serving(server)
        assert ask(server, "Keep this to yourself.", api_key="key-one", **{"Cache-Control": "no-store"}) == REPLY
        assert ask(server, "What is 2+2?", api_key="key-one") == REPLY
        rows = records_when(redis_server.url, ONE, 1)
    assert [row["prompt"] for row in rows] == ["What is 2+2?"]
    with redis.Redis.from_url(redis_server.url) as client:
        assert not any(b"Keep this to yourself." in value for key in client.scan_iter(_type="stream")
                       for _, fields in client.xrange(key) for value in fields.values())


def test_with_redis_down_the_reply_is_the_same_and_the_lost_record_counted(upstream, tmp_path):
    with running_redis(tmp_path / "redis") as redis_server, \
            gateway(redis_config(upstream.server.base_url, redis_server.url)) as (server, _):
        serving(server)
        assert ask(server, "What is 2+2?", api_key="key-one") == REPLY
        records_when(redis_server.url, ONE, 1)
        redis_server.kill()
        assert ask(server, "What is 2+2?", api_key="key-one") == REPLY
        deadline = time.monotonic() + WAIT_S
        while total(samples := scrape(server.url), "turnout_shadow_labels_total", outcome="sink-unavailable") < 1:
            assert time.monotonic() < deadline, "the lost record was never counted"
            time.sleep(0.05)
        assert total(samples, "turnout_shadow_labels_total", outcome="labelled") == 1
        assert total(samples, "turnout_shadow_labels_total", outcome="failed") == 0
        assert total(samples, "turnout_state_store_errors_total", component="shadow") >= 1

        redis_server.start()  # back (empty: no persistence): the next record is kept again
        assert ask(server, "Name a colour.", api_key="key-one") == REPLY
        assert [row["prompt"] for row in records_when(redis_server.url, ONE, 1)] == ["Name a colour."]


def test_with_the_sinks_breaker_open_no_other_answer_or_verdict_is_generated(upstream, tmp_path):
    """A record that cannot be kept costs nothing: once the sink's Redis breaker is open, a sampled request
    asks neither the other tier nor the judge (one failure opens it here; the cooldown outlasts the test)."""
    with running_redis(tmp_path / "redis") as redis_server, gateway(redis_config(
            upstream.server.base_url, redis_server.url).replace(
            "semantic_enabled: false", "semantic_enabled: false, breaker_failures: 1, breaker_cooldown_s: 600")
    ) as (server, _):
        serving(server)
        redis_server.kill()
        lost = 0.0
        for question in ("What is 2+2?", "What is 3+3?"):
            asked_before = len(upstream.bodies["large-model"])
            assert ask(server, question, api_key="key-one") == REPLY
            deadline = time.monotonic() + WAIT_S
            while total(samples := scrape(server.url), "turnout_shadow_labels_total",
                        outcome="sink-unavailable") <= lost:
                assert time.monotonic() < deadline, "the lost record was never counted"
                time.sleep(0.05)
            lost += 1
        # the first lost record still asked (its write opened the breaker); the second asked nothing
        assert len(upstream.bodies["large-model"]) == asked_before
        assert total(samples, "turnout_shadow_labels_total", outcome="labelled") == 0


def shadow_rows() -> list[dict]:
    """Outcome rows as the gateway records them, with a learnable rule: arithmetic needs the large tier."""
    return [{"prompt": f"{prompt} ({i})", "weak_quality": weak, "strong_quality": 1.0, "source": "shadow",
             "judge_verdicts": ["strong", "strong"] if weak == 0.0 else ["tie", "tie"]}
            for i in range(2) for prompts, weak in ((EASY, 0.5), (HARD, 0.0)) for prompt in prompts]


def write_records(redis_url: str, records: dict[str, list[dict]], shadow: str = "") -> None:
    """`records` by tenant, through the sink `routing.shadow: {sink: redis<shadow>}` makes."""
    config = parse_config("tiers: {small: {deployments: [{kind: openai, model: m, url: 'http://127.0.0.1:9/v1'}]}}\n"
                          f"cache: {{}}\nrouting: {{shadow: {{fraction: 1.0, sink: redis{shadow}}}}}\n")
    assert config.routing.shadow is not None

    async def write() -> None:
        store = StateStore.connect(redis_url, Metrics())
        state: Handle[StateStore] = Handle("redis")
        state.set(store)
        sink = shadow_sink(config.routing.shadow, state)
        try:
            for tenant, rows in records.items():
                for row in rows:
                    await sink.write(tenant, row)
        finally:
            await store.close()

    asyncio.run(write())


def test_train_and_eval_read_a_tenants_stream_in_pages(redis_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("gateway.shadow_read.PAGE", 5)  # 24 records: five XRANGE pages
    write_records(redis_server.url, {ONE: shadow_rows(), TWO: shadow_rows()[:3]})
    url, weights = stream_url(redis_server.url, ONE), tmp_path / "head.npz"
    assert main(["router", "train", "--data", url, "--out", str(weights), "--inputs", "features"]) == 0
    out = capsys.readouterr().out  # one tenant's stream is one group: the default 5 folds hold out prompts
    assert "24 prompts in 1 groups" in out and "5-fold cross-validation holding out prompts (only 1 groups" in out
    head = load_router(str(weights)).head
    assert head.meta["trained_on"] == url and head.meta["weak_column"] == "weak_quality"
    assert main(["router", "eval", "--data", url, "--data", f"other={stream_url(redis_server.url, TWO)}",
                 "--router", str(weights), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {name: s["prompts"] for name, s in result["sets"].items()} == {ONE: 24, "other": 3}
    assert result["sets"][ONE]["path"] == url
    assert set(result["routers"]) == {str(weights), "random", "length"}


def test_a_stream_is_capped_near_stream_maxlen(redis_server):
    """MAXLEN ~ trims whole stream nodes (100 entries each by default): near the cap, never under it."""
    rows = [{"prompt": f"p{i}", "weak_quality": 0.0, "strong_quality": 1.0} for i in range(500)]
    write_records(redis_server.url, {ONE: rows}, shadow=", stream_maxlen: 50")
    kept = read_stream(stream_url(redis_server.url, ONE)).rows
    assert 50 <= len(kept) <= 200 and kept[-1]["prompt"] == "p499"  # the newest kept, the oldest trimmed


@pytest.mark.parametrize("case", ["unreachable", "no tenant", "unknown tenant", "empty stream", "not a record"])
@pytest.mark.parametrize("command", ["train", "eval"])
def test_bad_stream_inputs_are_one_clear_line_and_exit_2(redis_server, tmp_path, capsys, case, command):
    key = TenantKeys.for_tenant(ONE).shadow
    url = stream_url(redis_server.url, ONE)
    with redis.Redis.from_url(redis_server.url) as client:
        if case == "unreachable":
            url = stream_url(f"redis://127.0.0.1:{free_port()}/0", ONE)
        elif case == "no tenant":
            url = redis_server.url
        elif case == "unknown tenant":
            url = stream_url(redis_server.url, "nobody")
        elif case == "empty stream":
            client.xdel(key, client.xadd(key, {"record": "{}"}))
        else:
            client.xadd(key, {"something": "else"})
    expected = {"unreachable": "cannot read from redis", "no tenant": "?tenant=T",
                "unknown tenant": "no shadow records for tenant 'nobody'", "empty stream": "is empty",
                "not a record": "is not a shadow record"}[case]
    argv = (["train", "--out", str(tmp_path / "h.npz"), "--inputs", "features", "--folds", "0"] if command == "train"
            else ["eval", "--router", "length"])
    assert main(["router", *argv, "--data", url]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith(f"turnout router: {url}") and err.count("\n") == 1


def test_a_redis_sink_needs_a_redis_and_stream_maxlen_needs_the_redis_sink(tmp_path):
    tiers = "tiers: {small: {deployments: [{kind: openai, model: m, url: 'http://127.0.0.1:9/v1'}]}}\n"
    for cache in ("", "cache: {enabled: false}\n"):
        with pytest.raises(ConfigError, match="routing.shadow.sink redis needs"):
            parse_config(tiers + cache + "routing: {shadow: {fraction: 0.5, sink: redis}}\n")
    with pytest.raises(ConfigError, match="stream_maxlen caps the redis sink"):
        parse_config(tiers + f"routing: {{shadow: {{fraction: 0.5, sink: '{tmp_path}', stream_maxlen: 5}}}}\n")
    assert parse_config(tiers + "cache: {}\nrouting: {shadow: {fraction: 0.5, sink: redis}}\n").routing.shadow.sink \
        == "redis"
    assert parse_config(tiers + "auth: {redis_url: 'redis://127.0.0.1:9/0'}\n"
                        "routing: {shadow: {fraction: 0.5, sink: redis}}\n").routing.shadow.sink == "redis"
    assert parse_config(tiers + "routing: {shadow: {fraction: 0.5, sink: ./redis}}\n").routing.shadow.sink == \
        Path("redis")


def test_a_password_never_leaves_the_url_it_came_in():
    assert shown_url("redis://user:secret@host:6379/0?tenant=a") == "redis://user:***@host:6379/0?tenant=a"
    assert shown_url("redis://:secret@host/1") == "redis://:***@host/1"
    assert shown_url("redis://host:6379/0?tenant=a") == "redis://host:6379/0?tenant=a"
