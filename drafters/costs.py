"""Forward-pass cost on this machine: what a draft step and a verification cost, in target steps."""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache, PreTrainedModel

from engine.kv import cache_argument, crop_cache


@torch.inference_mode()
def step_time(model: PreTrainedModel, width: int, context: int = 256, repeats: int = 5, rows: int = 1) -> float:
    """Seconds for one forward of `width` new tokens in each of `rows` sequences over a `context`-token KV cache."""
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.randint(0, 1000, (rows, context)), **cache_argument(cache), use_cache=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=torch.randint(0, 1000, (rows, width)), **cache_argument(cache), use_cache=True)
        times.append(time.perf_counter() - start)
        crop_cache(cache, context)
    return sorted(times)[len(times) // 2]


def draft_step_cost(draft: PreTrainedModel, target: PreTrainedModel) -> float:
    """One draft decode step in target decode steps, on one thread (on two, as an engine alone in the
    process decodes, the ratio was 0.12 against 0.10 here); a short context keeps this to a few target
    steps at load time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return step_time(draft, 1, context=32, repeats=5) / step_time(target, 1, context=32, repeats=3)
    finally:
        torch.set_num_threads(threads)
