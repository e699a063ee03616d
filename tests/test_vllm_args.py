"""`turnout vllm-args TIER`: the `vllm serve` command lines derived from a turnout config."""

from __future__ import annotations

import json
import shlex

import pytest

from gateway.cli import main

CONFIG = """
tiers:
  small:
    deployments:
      - {kind: openai, model: qwen2.5-coder-0.5b-instruct, url: "http://vllm-small:8001/v1", context_length: 8192}
  large:
    deployments:
      - kind: openai
        name: big-a
        model: qwen2.5-coder-1.5b-instruct
        url: http://gpu-a/v1
        speculative: {method: draft_model, draft_model: qwen2.5-coder-0.5b-instruct, num_speculative_tokens: 5}
        extra_args: [--tensor-parallel-size=2, --pipeline-parallel-size=2]
      - kind: openai
        name: big-b
        model: Org/Some-Model
        url: http://gpu-b:9000/v1
        speculative: {method: ngram, num_speculative_tokens: 3, ngram_min: 2}
      - {kind: litellm, model: openai/gpt-4o}
routing: {router: none}
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "turnout.yaml"
    path.write_text(CONFIG)
    return str(path)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["vllm-args", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def commands(out: str) -> dict[str, list[str]]:
    """`# name` lines followed by a shell command → name: argv."""
    lines = out.strip().splitlines()
    return {name.removeprefix("# "): shlex.split(command) for name, command in zip(lines[::2], lines[1::2],
                                                                                    strict=True)}


def test_small_tier_maps_builtin_names_and_takes_port_and_context_from_the_config(capsys, config_file):
    code, out, _ = run(capsys, "small", "--config", config_file)
    assert code == 0
    assert commands(out) == {"small-0": [
        "vllm", "serve", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "--port", "8001",
        "--served-model-name", "qwen2.5-coder-0.5b-instruct", "--max-model-len=8192"]}


def test_large_tier_carries_speculative_config_and_parallelism(capsys, config_file):
    code, out, _ = run(capsys, "large", "--config", config_file)
    assert code == 0
    argv = commands(out)
    assert list(argv) == ["big-a", "big-b"]  # litellm deployments are not vLLM's
    big_a = argv["big-a"]
    assert big_a[:7] == ["vllm", "serve", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "--port", "8000",
                         "--served-model-name", "qwen2.5-coder-1.5b-instruct"]
    assert json.loads(big_a[big_a.index("--speculative-config") + 1]) == {
        "method": "draft_model", "model": "Qwen/Qwen2.5-Coder-0.5B-Instruct", "num_speculative_tokens": 5}
    assert big_a[-2:] == ["--tensor-parallel-size=2", "--pipeline-parallel-size=2"]
    big_b = argv["big-b"]
    assert big_b[2:5] == ["Org/Some-Model", "--port", "9000"]
    speculative = json.loads(big_b[big_b.index("--speculative-config") + 1])
    assert speculative == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4,
                           "prompt_lookup_min": 2}


def test_json_is_the_argument_list_after_vllm_serve(capsys, config_file):
    _, shell, _ = run(capsys, "large", "--config", config_file)
    code, out, _ = run(capsys, "large", "--config", config_file, "--json")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [argv[2:] for argv in commands(shell).values()]


def test_refusals(capsys, tmp_path):
    only_hosted = tmp_path / "hosted.yaml"
    only_hosted.write_text("tiers:\n  small:\n    deployments: [{kind: litellm, model: openai/gpt-4o-mini}]\n"
                           "routing: {router: none}\n")
    code, _, err = run(capsys, "small", "--config", str(only_hosted))
    assert code == 1 and "no deployment vLLM can serve" in err
    code, _, err = run(capsys, "large", "--config", str(only_hosted))
    assert code == 1 and "not configured" in err
