"""turnout.yaml loading: validation messages name the key, ${ENV} interpolation, `turnout config check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=environ)
    return caught.value.errors


def test_builtin_default_is_two_embedded_tiers():
    config = load_config(None)
    small, large = config.tiers["small"].deployments[0], config.tiers["large"].deployments[0]
    assert (small.kind, small.model) == ("embedded", "qwen2.5-coder-0.5b-instruct")
    assert (large.kind, large.model) == ("embedded", "qwen2.5-coder-1.5b-instruct")
    assert large.speculative.method == "ngram"  # the draft model measured 0.7x on CPU (BENCHMARKS.md)
    assert config.cache is not None and config.cache.enabled and config.cache.redis_url is None  # embedded Redis


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate(path):
    config = load_config(path, EXAMPLE_ENV)
    assert set(config.tiers) == {"small", "large"}


def test_env_interpolation_with_defaults():
    config = parse_config("""
tiers:
  small:
    deployments: [{kind: openai, model: m, url: "${BASE:-http://localhost:8000}/v1", api_key: "${KEY}"}]
""", environ={"KEY": "sk-secret"})
    deployment = config.tiers["small"].deployments[0]
    assert deployment.url == "http://localhost:8000/v1"
    assert deployment.api_key == "sk-secret"


def test_missing_env_names_key_and_variable():
    assert errors_of("tiers: {small: {deployments: [{model: m, api_key: '${NOPE}'}]}}") == [
        "tiers.small.deployments[0].api_key: environment variable NOPE is not set"]


def test_errors_name_the_key():
    errors = errors_of("""
server: {port: 99999}
tiers:
  large:
    deployments:
      - {kind: openai, model: big}
      - {kind: embeded, tmeout_s: 3}
  small:
    deployments:
      - {kind: embedded, model: tiny, threads: 0, speculative: {method: ngram, ngram_min: 5}}
routing: {threshold: 0.5, strong_fraction: 0.2}
""")
    assert "server.port: Input should be less than or equal to 65535" in errors
    assert any(e.startswith("tiers.large.deployments[0].url: field required") for e in errors)
    assert any(e.startswith("tiers.large.deployments[1].kind: Input should be") for e in errors)
    assert "tiers.large.deployments[1].model: Field required" in errors
    assert "tiers.large.deployments[1].tmeout_s: unknown key" in errors
    assert "routing: give threshold or strong_fraction, not both" in errors
    assert "tiers.small.deployments[0].threads: Input should be greater than or equal to 1" in errors
    assert "tiers.small.deployments[0].speculative: ngram_min (5) must not exceed ngram_max (4)" in errors


def test_rules_and_aliases_are_checked():
    rule = errors_of("""
tiers: {small: {deployments: [{model: m}]}}
routing: {rules: [{name: r, tier: small, when: {regex: "("}}]}
""")
    assert rule[0].startswith("routing.rules[0].when: regex does not compile")
    alias = errors_of("""
tiers: {small: {deployments: [{model: m}]}}
models_aliases: {gpt-4o: nothing}
""")
    assert alias == ["models_aliases: gpt-4o: 'nothing' is not auto, a tier or a configured model id"]


@pytest.mark.parametrize(("text", "message"), [
    ("tiers: [", "not valid YAML"),
    ("- a\n- b", "expected a mapping"),
    ("{}", "tiers: Field required"),
])
def test_malformed_documents(text, message):
    assert message in errors_of(text)[0]


def test_cli_config_check(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("tiers: {small: {deployments: [{model: tiny}]}}\n")
    assert main(["config", "check", str(good)]) == 0
    assert "small: tiny (embedded, in-process)" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: {small: {deployments: [{kind: openai, model: x}]}}\n")
    assert main(["config", "check", str(bad)]) == 1
    assert "tiers.small.deployments[0].url: field required" in capsys.readouterr().err

    assert main(["config", "check", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read file" in capsys.readouterr().err
