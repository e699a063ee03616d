"""bench/engine/encoder_mix: one engine's decode steps while the router's encoder embeds arriving prompts.

The gateway embeds every new request's prompt (router, semantic cache) in a worker thread while an engine
may be decoding. Per arm: the 1.5B decodes 30 single-token steps on 1 or 2 threads, alone or while the
encoder (torch, its threads from engine/cpu_share.py as in the gateway) embeds one prompt every
`--interval` seconds; the engine counts as busy in the share, as the scheduler marks itself.

    .venv/bin/python -m bench.engine.encoder_mix [--interval 0.05 0.2]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch
from transformers import DynamicCache

from bench.common import markdown_table
from engine.cpu_share import CPU_SHARE
from engine.kv import cache_argument
from engine.loader import load_model
from engine.store import resolve
from router_models.encoder import Encoder

MODEL = "qwen2.5-coder-1.5b-instruct"
PROMPTS = [f"Explain question {i} about databases and indexing in two sentences." for i in range(400)]


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(seconds, q * 100, method="lower")) * 1000


@torch.inference_mode()
def decode_steps(model: torch.nn.Module, threads: int, steps: int) -> list[float]:
    """Seconds per single-token step over a 100-token cache, the engine marked busy meanwhile."""
    with CPU_SHARE.torch_threads(threads):
        cache = DynamicCache(config=model.config)
        model(input_ids=torch.arange(1000, 1100)[None], **cache_argument(cache), use_cache=True, logits_to_keep=1)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model(input_ids=torch.tensor([[7]]), **cache_argument(cache), use_cache=True, logits_to_keep=1)
            times.append(time.perf_counter() - start)
            cache.crop(-1)
        return times


def embed_arrivals(encoder: Encoder, interval: float, stop: threading.Event, out: list[float]) -> None:
    i = 0
    while not stop.is_set():
        start = time.perf_counter()
        encoder.embed([PROMPTS[i % len(PROMPTS)]])
        out.append(time.perf_counter() - start)
        i += 1
        time.sleep(max(0.0, interval - (time.perf_counter() - start)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, nargs="+", default=[0.05, 0.2], help="seconds between prompts")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    model = load_model(MODEL, resolve(MODEL, progress=False), pack=True).model
    encoder = Encoder(backend="torch")
    encoder.embed(PROMPTS[:2])
    rows = []
    for interval in args.interval:
        for threads in (1, 2):
            for with_encoder in (False, True):
                embeds: list[float] = []
                stop = threading.Event()
                arrivals = threading.Thread(target=embed_arrivals, args=(encoder, interval, stop, embeds))
                if with_encoder:
                    arrivals.start()
                steps = decode_steps(model, threads, args.steps)
                stop.set()
                if with_encoder:
                    arrivals.join()
                rows.append([f"{1 / interval:.0f}/s" if with_encoder else "none", threads,
                             f"{percentile_ms(steps, 0.5):.0f}", f"{percentile_ms(steps, 0.9):.0f}",
                             f"{percentile_ms(embeds, 0.5):.1f}" if embeds else "", len(embeds) or ""])
                print(rows[-1], flush=True)
    print(markdown_table(["prompts embedded", "engine threads", "step p50 ms", "step p90 ms", "embed p50 ms",
                          "embeds"], rows))


if __name__ == "__main__":
    main()
