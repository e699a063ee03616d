"""/dashboard in a real headless Chromium: a gateway (SmolLM2 in both tiers with n-gram drafting, embedded
Redis cache) answers a few requests, then the page must have drawn every chart from live, non-zero data
(the charts carry data attributes set after rendering). The screenshot goes to a temporary file; set
TURNOUT_SCREENSHOT=docs/img/dashboard.png to refresh the README's picture."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser

import httpx
import openai
import pytest
from conftest import ROOT, UvicornServer, wait_until_ready

from gateway.api import create_app
from gateway.config import parse_config
from gateway.dashboard import Sample, Timeline
from gateway.dashboard.data import histogram_quantile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHARTS = ("routing", "savings", "hit_rate", "acceptance", "latency")
# (prompt, model): repeats are cache hits; `large` forces the large tier
TRAFFIC = [
    ("Repeat twice: the quick brown fox jumps over the lazy dog.", "auto"),
    ("Repeat twice: red, green, blue, yellow.", "large"),
    ("Repeat twice: the quick brown fox jumps over the lazy dog.", "auto"),
    ("Repeat twice: one two three four five.", "auto"),
    ("Repeat twice: red, green, blue, yellow.", "large"),
    ("Repeat twice: Monday, Tuesday, Wednesday.", "auto"),
    ("Repeat twice: to be or not to be.", "large"),
    ("Repeat twice: one two three four five.", "auto"),
    ("Repeat twice: north, south, east, west.", "auto"),
]


@pytest.fixture(scope="module")
def gateway(tiny_model: str):
    deployment = f"{{kind: embedded, model: {tiny_model}, speculative: {{method: ngram, num_speculative_tokens: 4}}}}"
    config = parse_config(f"""
tiers:
  small: {{deployments: [{deployment}]}}
  large: {{deployments: [{deployment}]}}
routing: {{router: none}}
cache: {{semantic_enabled: false}}
pricing:
  baseline_model: gpt-4o
  models:
    {tiny_model}: {{input_per_1m: 0.15, output_per_1m: 0.6}}
    gpt-4o: {{input_per_1m: 2.5, output_per_1m: 10.0}}
dashboard: {{bucket_s: 3}}
""")
    with UvicornServer(create_app(config)) as server:
        wait_until_ready(server.url)
        yield server


def chromium(*args: str, user_data_dir: str) -> str:
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={user_data_dir}", "--virtual-time-budget=5000", *args],
        capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


class _Charts(HTMLParser):
    """The attributes of each `<svg data-chart=…>` and `<div data-tile=…>` of the rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fields = dict(attrs)
        if tag == "svg" and fields.get("data-chart"):
            self.charts[str(fields["data-chart"])] = fields


def number(value: str | None) -> float:
    return float(value) if value else 0.0


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_dashboard_renders_live_data(gateway, tmp_path):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-dashboard", max_retries=0)
    for prompt, model in TRAFFIC:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=24, temperature=0)
    data = httpx.get(gateway.url + "/dashboard/data", timeout=10).json()
    assert data["totals"]["requests"] == len(TRAFFIC)
    assert data["totals"]["prompt_reuse"] > 0  # the chat template's system prompt, from the prefix cache

    page = _Charts()
    page.feed(chromium("--dump-dom", gateway.url + "/dashboard", user_data_dir=str(tmp_path / "dom")))
    assert set(page.charts) == set(CHARTS)
    assert all(chart.get("data-rendered") == "true" and number(chart.get("data-points")) >= 1
               for chart in page.charts.values())
    routing = page.charts["routing"]
    assert number(routing["data-total"]) == len(TRAFFIC)
    assert number(routing["data-small"]) > 0 and number(routing["data-large"]) > 0
    assert number(page.charts["savings"]["data-latest"]) > 0
    assert number(page.charts["hit_rate"]["data-max"]) > 0
    assert number(page.charts["acceptance"]["data-max"]) > 0
    assert number(page.charts["latency"]["data-latest"]) > 0

    wanted = os.environ.get("TURNOUT_SCREENSHOT")
    screenshot = ROOT / wanted if wanted else tmp_path / "shot.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    chromium(f"--screenshot={screenshot}", "--window-size=1280,1010", gateway.url + "/dashboard",
             user_data_dir=str(tmp_path / "shot"))
    assert screenshot.stat().st_size > 10_000


def test_timeline_points_cover_quiet_intervals():
    now = [1000.0]
    timeline = Timeline(bucket_s=10, buckets=4, clock=lambda: now[0])
    timeline.add(Sample("small", "miss", 200, 2.0, cost_usd=1.0, baseline_usd=3.0, draft_tokens=8, accepted_tokens=6))
    timeline.add(Sample("large", "hit", 200, 0.5, baseline_usd=3.0))
    now[0] = 1031.0  # two quiet intervals later
    timeline.add(Sample("small", None, 502, 1.0))
    timeline.add(Sample("small", None, 429, 0.1))
    timeline.add(Sample("small", None, 499, 0.1))
    points = timeline.series()
    assert [p["t"] for p in points] == [1000, 1010, 1020, 1030]
    assert points[0] | {"t": 1000} == {
        "t": 1000, "requests": 2, "small": 1, "large": 0, "cached": 1, "failed": 0, "client_errors": 0,
        "hit_rate": 0.5,
        "cost_usd": 1.0, "savings_usd": 5.0, "acceptance": 0.75, "p50_s": 0.5, "p95_s": 2.0}
    assert points[1]["requests"] == 0 and points[1]["p95_s"] is None
    assert (points[3]["failed"], points[3]["client_errors"]) == (1, 2)
    now[0] = 1100.0
    assert [p["t"] for p in timeline.series()] == [1070, 1080, 1090, 1100]  # the ring keeps the last 4


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.5, 0.0), (1.0, 10.0), (2.0, 20.0), (float("inf"), 20.0)]
    assert histogram_quantile(0.5, buckets) == 1.0
    assert histogram_quantile(0.75, buckets) == 1.5
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
