"""The same speculative settings, expressed as vLLM's `--speculative-config` JSON for GPU hosts."""

from __future__ import annotations

import json
from typing import Any

from engine.speculative import SpeculativeConfig


def hub_id(name: str) -> str:
    """vLLM loads from a hub or a path: map a turnout built-in name to its Hugging Face repo."""
    from engine.store import BUILTIN_MODELS

    spec = BUILTIN_MODELS.get(name)
    return spec.hf_repo if spec else name


def vllm_speculative_config(config: SpeculativeConfig) -> dict[str, Any] | None:
    """vLLM speculates with one method; `ngram+draft_model` becomes the draft model (the stronger one)."""
    if config.method == "none":
        return None
    if config.method == "ngram":
        return {
            "method": "ngram",
            "num_speculative_tokens": config.num_speculative_tokens,
            "prompt_lookup_max": config.ngram_max,
            "prompt_lookup_min": config.ngram_min,
        }
    assert config.draft_model is not None
    return {
        "method": "eagle3" if config.method == "eagle3" else "draft_model",
        "model": hub_id(config.draft_model),
        "num_speculative_tokens": config.num_speculative_tokens,
    }


def vllm_serve_args(model: str, config: SpeculativeConfig, *, port: int = 8000,
                    served_name: str | None = None, extra: list[str] | None = None) -> list[str]:
    """`vllm serve` argv for one tier; compose.yaml and `turnout vllm-args` both use it."""
    args = ["vllm", "serve", hub_id(model), "--port", str(port), "--served-model-name", served_name or model]
    speculative = vllm_speculative_config(config)
    if speculative:
        args += ["--speculative-config", json.dumps(speculative, separators=(",", ":"))]
    return args + (extra or [])
