"""Shadow labelling (routing.shadow), through the official openai SDK against a real HTTP upstream
(scripted_upstream.py's server, which also plays a judge that prefers the large tier's answer, and a
large model that holds its answers until the test lets them go)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import UvicornServer
from scrape import scrape, total
from scripted_upstream import ScriptedUpstream, deployment, gateway, stream_reply, two_tiers
from starlette.requests import Request

from gateway.api import create_app
from gateway.config import parse_config
from gateway.pairwise_judge import INSTRUCTIONS
from router_models.data import load_outcomes

WAIT_S = 120.0


class JudgingUpstream(ScriptedUpstream):
    """Judges like a model that always prefers the large tier's answer; `large-held` answers only once
    `release` is set, and counts the requests it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.held = 0

    async def _chat(self, request: Request):
        body = await request.json()
        first = body["messages"][0]
        if first["role"] == "system" and first["content"] == INSTRUCTIONS:
            answer_a = body["messages"][1]["content"].split("[Answer A]\n", 1)[1]
            verdict = "A" if answer_a.startswith("large-") else "B"
            return stream_reply([verdict])
        if body["model"] == "large-held":
            self.held += 1
            while not self.release.is_set():
                await asyncio.sleep(0.02)
            self.held -= 1
        return await super()._chat(request)

    def stop(self) -> None:
        self.release.set()  # a held request would keep the server from stopping
        super().stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[JudgingUpstream]:
    with JudgingUpstream() as upstream:
        yield upstream


def config_text(url: str, sink: Path, large: str = "large-model", shadow: str = "") -> str:
    return (two_tiers(deployment(url, "small-sure"), deployment(url, large))
            + f"routing: {{router: none, shadow: {{fraction: 1.0, sink: '{sink}'{shadow}}}}}\n")


def ask(server: UvicornServer, content: str, api_key: str = "k", **headers: str) -> str:
    client = openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, default_headers=headers)
    reply = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": content}])
    return reply.choices[0].message.content


def rows_when(sink: Path, count: int) -> dict[str, list[dict]]:
    """The sink's rows by file, once `count` rows are there."""
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = {path.name: [json.loads(line) for line in path.read_text().splitlines()]
                for path in sorted(sink.glob("*.jsonl"))}
        if sum(map(len, rows.values())) >= count:
            return rows
        assert time.monotonic() < deadline, f"only {rows} after {WAIT_S}s"
        time.sleep(0.05)


def test_a_sampled_reply_is_judged_against_the_other_tier_into_the_tenants_own_file(upstream, tmp_path):
    with gateway(config_text(upstream.server.base_url, tmp_path)) as (server, _):
        assert ask(server, "What is 2+2?", api_key="key-one") == "small-sure:The answer is here."
        assert ask(server, "Name a colour.", api_key="key-two") == "small-sure:The answer is here."
        by_file = rows_when(tmp_path, 2)
        assert total(scrape(server.url), "turnout_shadow_labels_total", outcome="labelled") == 2
    assert len(by_file) == 2 and all(len(rows) == 1 for rows in by_file.values())  # one file per tenant
    rows = sorted((row for rows in by_file.values() for row in rows), key=lambda row: row["prompt"])
    assert [row["prompt"] for row in rows] == ["Name a colour.", "What is 2+2?"]
    for row in rows:
        assert row["weak_answer"] == "small-sure:The answer is here."
        assert row["strong_answer"] == "large-model:The answer is here."
        assert (row["weak_quality"], row["strong_quality"]) == (0.0, 1.0)  # the judge preferred large both ways
        assert row["judge_verdicts"] == ["strong", "strong"] and row["served_tier"] == "small"
    for name in by_file:  # what `turnout router train --data` reads
        assert len(load_outcomes(tmp_path / name, weak_column="weak_quality", strong_column="strong_quality")) == 1


def test_no_store_requests_are_never_shadowed(upstream, tmp_path):
    with gateway(config_text(upstream.server.base_url, tmp_path)) as (server, _):
        ask(server, "Keep this to yourself.", **{"Cache-Control": "no-store"})
        ask(server, "What is 2+2?")
        rows = rows_when(tmp_path, 1)
    assert [row["prompt"] for rows in rows.values() for row in rows] == ["What is 2+2?"]
    assert "Keep this to yourself." not in json.dumps(list(upstream.bodies.get("large-model", [])))


def test_the_client_has_its_whole_reply_while_the_shadow_is_still_waiting(upstream, tmp_path):
    """The shadow's large-tier request is held; the client's reply is complete regardless, and requests
    beyond the queue's room are dropped, not waited for."""
    upstream.release.clear()
    text = config_text(upstream.server.base_url, tmp_path, large="large-held", shadow=", queue: 1")
    try:
        with gateway(text) as (server, _):
            assert ask(server, "first") == "small-sure:The answer is here."
            deadline = time.monotonic() + WAIT_S
            while upstream.held < 1:  # the shadow of "first" is now being answered, and held
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert ask(server, "second") == "small-sure:The answer is here."  # waits in the queue
            assert ask(server, "third") == "small-sure:The answer is here."  # the queue is full: dropped
            assert not list(tmp_path.glob("*.jsonl"))
            assert total(scrape(server.url), "turnout_shadow_labels_total", outcome="dropped") == 1
            upstream.release.set()
            rows = rows_when(tmp_path, 2)
    finally:
        upstream.release.set()
    assert sorted(row["prompt"] for rows in rows.values() for row in rows) == ["first", "second"]


def test_an_unknown_judge_is_refused_at_startup(upstream, tmp_path):
    with pytest.raises(ValueError, match="routing.shadow.judge nobody"):
        create_app(parse_config(config_text(upstream.server.base_url, tmp_path, shadow=", judge: nobody")))
