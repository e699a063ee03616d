"""A config that needs the engine extra where it is not installed stops at startup with one line naming
what needs it and how to do without; a remote-only config needs nothing of it. The extra's absence is
simulated here; tests/test_remote_only_install.py runs without it for real."""

from __future__ import annotations

import pytest

from gateway import extras
from gateway.api import create_app
from gateway.config import load_config, parse_config

REMOTE_ONLY = """
tiers:
  small: {deployments: [{kind: openai, model: m, url: "http://127.0.0.1:9/v1"}]}
routing: {router: default}
cache: {semantic_enabled: false}
"""


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "missing_engine_modules", lambda: ["torch"])


def test_remote_only_config_needs_no_engine(no_engine):
    extras.require_engine_extra(parse_config(REMOTE_ONLY), router_needs_embedding=False)


def test_the_default_config_names_each_part_that_needs_the_engine(no_engine):
    with pytest.raises(extras.MissingExtra) as error:
        create_app(load_config(None, {}))
    message = str(error.value)
    assert message.startswith("install turnout[engine] for ")
    assert "embedded qwen2.5-coder-0.5b-instruct" in message and "embedded qwen2.5-coder-1.5b-instruct" in message
    assert "semantic cache" in message and "torch not installed here" in message


def test_a_router_on_the_transformer_embedding_needs_the_engine(no_engine):
    config = parse_config(REMOTE_ONLY.replace("router: default", "router: embedding"))
    with pytest.raises(extras.MissingExtra, match="routing.router embedding"):
        create_app(config)


def test_with_the_extra_installed_nothing_is_refused():
    assert extras.missing_engine_modules() == []
    extras.require_engine_extra(load_config(None, {}), router_needs_embedding=True)


def test_an_engine_import_error_becomes_the_hint_and_others_pass_through():
    hint = r"for `turnout models` — transformers not installed"
    with pytest.raises(extras.MissingExtra, match=hint), extras.needs_engine("`turnout models`"):
        raise ModuleNotFoundError("No module named 'transformers.models'", name="transformers.models")
    with pytest.raises(ModuleNotFoundError), extras.needs_engine("anything"):
        raise ModuleNotFoundError("No module named 'litellm'", name="litellm")
