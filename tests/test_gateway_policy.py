"""Routing policy over real (unstarted) HTTP backends: precedence of header, model, rules, context
overflow and router, and the 404/400 answers. No server, no model."""

from __future__ import annotations

import functools

import pytest

from gateway.backends import build_backends
from gateway.balancer import Balancer
from gateway.config import parse_config
from gateway.errors import APIError
from gateway.policy import Policy, build_router
from gateway.route import Route
from gateway.types import BackendRequest

CONFIG = """
tiers:
  small:
    deployments:
      - {kind: openai, model: s1, url: "http://a/v1", context_length: 100}
      - {kind: openai, model: s2, url: "http://b/v1", context_length: 100}
  large:
    deployments: [{kind: openai, model: big, url: "http://c/v1", context_length: 1000}]
routing:
  router: length
  threshold: 0.5
  rules:
    - {name: vip, tier: large, when: {api_keys: [sk-vip]}}
    - {name: greet, tier: small, when: {regex: "^hello"}}
models_aliases: {gpt-4o: large, mini: s2}
"""


@pytest.fixture
def policy() -> Policy:
    config = parse_config(CONFIG)
    router, threshold = build_router(config.routing)
    return Policy(config, build_backends(config), router, threshold)


def request(text: str, model: str = "auto", **params) -> BackendRequest:
    return BackendRequest(kind="chat", model=model, messages=[{"role": "user", "content": text}], params=params)


def routed(policy: Policy, req: BackendRequest, tier_header: str | None = None, api_key: str | None = None) -> Route:
    """What the pipeline does: resolve the target once, then route it."""
    return policy.route(req, policy.target(req.model, tier_header), api_key=api_key)


@functools.cache
def balancer_of(policy: Policy) -> Balancer:
    return Balancer(parse_config(CONFIG), policy.tiers)


def route_of(policy: Policy, text: str = "hi", model: str = "auto", **kwargs):
    """The tier, the model of the deployment failover would try first, and the reason."""
    route = routed(policy, request(text, model), **kwargs)
    replica = balancer_of(policy).choose(route.tier, route.model)
    assert replica is not None
    return route.tier, replica.model, route.reason


def test_forcing(policy):
    assert route_of(policy, model="large") == ("large", "big", "forced-model")
    assert route_of(policy, model="gpt-4o") == ("large", "big", "forced-model")
    assert route_of(policy, model="mini") == ("small", "s2", "forced-model")
    assert route_of(policy, model="s2", tier_header="large") == ("large", "big", "forced-header")


def test_round_robin_within_a_tier(policy):
    assert {route_of(policy, model="small")[1] for _ in range(4)} == {"s1", "s2"}


def test_rules_then_overflow_then_router(policy):
    assert route_of(policy, "hello there " * 100, api_key="sk-vip")[2] == "rule:vip"
    assert route_of(policy, "hello there")[::2] == ("small", "rule:greet")
    assert route_of(policy, "x" * 800)[::2] == ("large", "context-overflow")  # ~200 tokens > 100
    tier, _, reason = route_of(policy, "what is 2+2?")
    assert (tier, reason) == ("small", "router")
    route = routed(policy, request("what is 2+2?"))
    assert route.headers()["x-turnout-router-score"] == f"{route.score:.4f}"


def test_max_tokens_counts_toward_context(policy):
    assert routed(policy, request("short", max_tokens=200)).reason == "context-overflow"


def test_beyond_every_context_is_400(policy):
    with pytest.raises(APIError) as caught:
        routed(policy, request("x" * 8000))
    assert (caught.value.status, caught.value.code) == (400, "context_length_exceeded")


@pytest.mark.parametrize(("model", "header", "status"), [("gpt-9", None, 404), ("auto", "huge", 400)])
def test_refusals(policy, model, header, status):
    with pytest.raises(APIError) as caught:
        routed(policy, request("hi", model), tier_header=header)
    assert caught.value.status == status


def test_model_ids_for_listing(policy):
    assert policy.model_ids() == ["auto", "small", "large", "s1", "s2", "big", "gpt-4o", "mini"]


def conversation(*user_turns: str) -> BackendRequest:
    messages = []
    for turn in user_turns:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "..."}]
    return BackendRequest(kind="chat", model="auto", messages=messages[:-1])


@pytest.mark.parametrize(("turns", "expected"), [("conversation", ("large", "router-conversation")),
                                                  ("last", ("small", "router"))])
def test_a_follow_up_keeps_the_tier_of_the_question_it_follows(turns, expected):
    config = parse_config(CONFIG.replace("threshold: 0.5", f"threshold: 0.2\n  turns: {turns}"))
    policy = Policy(config, build_backends(config), *build_router(config.routing))
    hard = "Prove that the sum of the first n odd numbers is n squared, step by step."  # length score ~0.13
    hard = hard + " Then generalise it." * 5
    assert routed(policy, request(hard)).tier == "large"
    route = routed(policy, conversation(hard, "and for even numbers?"))
    assert (route.tier, route.reason) == expected
    # a hard follow-up lifts a conversation that began small, whatever the mode
    assert routed(policy, conversation("hi there", hard)).tier == "large"


def test_long_conversations_score_the_first_and_the_latest_user_turns(policy):
    turns = [f"turn {i}" for i in range(20)]
    assert policy.routed_turns(conversation(*turns)) == ["turn 0", *turns[-7:]]
    assert policy.routed_turns(BackendRequest(kind="completion", model="auto", prompt="p")) == ["p"]
    assert policy.routed_turns(BackendRequest(kind="chat", model="auto", messages=[])) == [""]
