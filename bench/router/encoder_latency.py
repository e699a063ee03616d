"""Prompt-encoder speed and fidelity: single-prompt latency, batch throughput, cosine vs fp32.

    .venv/bin/python bench/router/encoder_latency.py [--data /work/shared/data/routellm/mmlu] [--best-of 3]

Variants: plain `SentenceTransformer.encode` (the reference); our `Encoder` on torch (modules called
directly under inference_mode) at 1/2 threads, dynamic int8, max_seq_length 128; and, when
onnxruntime and onnx are installed, `Encoder` on onnxruntime (offline ONNX export) in fp32 and two
int8 variants. Then throughput through `BatchingEncoder` under concurrency and the head's scoring
latency. Prompts: a seeded MMLU sample when the data is there (else built-in chat prompts), plus
ten short chat prompts. Other tenants share the CPU, so each prompt keeps its fastest of
--best-of runs; the load average is printed first.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from router_models import load_router  # noqa: E402
from router_models.encoder import DEFAULT_CACHE_DIR, BatchingEncoder, Encoder, bundled_model_dir  # noqa: E402

CHAT_PROMPTS = [
    "How do I reverse a list in Python?",
    "Write a short poem about the sea.",
    "What's the difference between TCP and UDP?",
    "Summarise the plot of Hamlet in three sentences.",
    "Explain gradient descent to a high-school student, with an analogy.",
    "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. How much is the ball?",
    "Translate 'good morning, how are you today?' into French and Spanish.",
    "Give me a SQL query that returns the ten customers with the highest total order value last year.",
    "Why is the sky blue?",
    "Draft a polite email declining a meeting invitation next Tuesday because of a schedule conflict.",
]


def sample_prompts(data: str | None, n: int) -> list[str]:
    if data and Path(data).is_dir():
        from router_models.data import load_outcomes

        prompts = load_outcomes(data).prompts
        return [prompts[i] for i in np.random.default_rng(0).choice(len(prompts), n, replace=False)]
    return [CHAT_PROMPTS[i % len(CHAT_PROMPTS)] + f" ({i})" for i in range(n)]


class SentenceTransformersEncode:
    """The reference: what calling sentence-transformers directly costs."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


class TorchInt8:
    """Our torch path after `torch.ao.quantization.quantize_dynamic` on every Linear layer."""

    def __init__(self, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        model = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True).eval()
        self.model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.torch = torch

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self.torch.inference_mode():
            vectors = self.model(self.model.preprocess(list(texts)))["sentence_embedding"]
            return self.torch.nn.functional.normalize(vectors, dim=1).numpy()


def onnx_int8(threads: int, keep_ffn_output_fp32: bool) -> Encoder:
    """onnxruntime dynamic int8 (per-channel MatMul weights) of our ONNX export.

    keep_ffn_output_fp32 leaves the six feed-forward output projections in fp32: they are where
    int8 error concentrates (cosine min 0.986 -> 0.993 vs fp32).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from router_models.onnx_export import exported_path

    fp32 = exported_path(bundled_model_dir(), DEFAULT_CACHE_DIR)
    Encoder(backend="onnx")  # exports fp32 once if needed
    target = fp32.with_name(fp32.stem + ("-int8-ffnout-fp32" if keep_ffn_output_fp32 else "-int8") + ".onnx")
    if not target.exists():
        matmuls = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "MatMul"]
        ffn_output = [n for n in matmuls if "/output/dense" in n and "attention" not in n]
        excluded = ffn_output if keep_ffn_output_fp32 else []
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded)
    return Encoder(backend="onnx", onnx_file=target, num_threads=threads)


Embed = Callable[[list[str]], np.ndarray]


def single_prompt_latency_ms(embed: Embed, prompts: list[str], best_of: int) -> tuple[float, float]:
    """p50/p99 over prompts of each prompt's fastest of `best_of` runs (filters other tenants' bursts)."""
    for p in prompts[:10]:
        embed([p])
    timings = np.full(len(prompts), np.inf)
    for _ in range(best_of):
        for i, p in enumerate(prompts):
            started = time.perf_counter()
            embed([p])
            timings[i] = min(timings[i], (time.perf_counter() - started) * 1000)
    return float(np.median(timings)), float(np.percentile(timings, 99))


def batch_throughput(embed: Embed, prompts: list[str], best_of: int, batch: int = 32) -> float:
    best = np.inf
    for _ in range(best_of):
        started = time.perf_counter()
        for i in range(0, len(prompts), batch):
            embed(prompts[i : i + batch])
        best = min(best, time.perf_counter() - started)
    return len(prompts) / best


def cosine_to_reference(vectors: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
    cosines = np.sum(vectors * reference, axis=1) / norms
    return float(cosines.min()), float(cosines.mean())


async def concurrent_throughput(encoder: Encoder, prompts: list[str], clients: int, max_wait_ms: float):
    batching = BatchingEncoder(encoder, max_wait_ms=max_wait_ms)
    latencies: list[float] = []
    queue = list(prompts)

    async def client() -> None:
        while queue:
            text = queue.pop()
            started = time.perf_counter()
            await batching.embed_one(text)
            latencies.append((time.perf_counter() - started) * 1000)

    await batching.embed_one("warm up")
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    await batching.aclose()
    return len(prompts) / elapsed, statistics.median(latencies), float(np.percentile(latencies, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/routellm/mmlu")
    parser.add_argument("--n", type=int, default=100, help="prompts in the sample")
    parser.add_argument("--best-of", type=int, default=3, help="repeats; each prompt keeps its fastest run")
    parser.add_argument("--skip-variants", action="store_true", help="only the concurrency and head numbers")
    args = parser.parse_args()

    prompts = sample_prompts(args.data, args.n)
    chat = CHAT_PROMPTS * 2
    source = "MMLU sample" if args.data and Path(args.data).is_dir() else "chat"
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"{len(prompts)} prompts ({source}), plus {len(CHAT_PROMPTS)} short chat prompts")
    import torch

    reference = Encoder(backend="torch", num_threads=2)
    reference_vectors = reference.embed(prompts)

    variants: list[tuple[str, Callable[[], object]]] = [
        ("sentence-transformers encode(), torch fp32, 2 threads", SentenceTransformersEncode),
        *[(f"Encoder torch fp32, {t} thread(s)", lambda t=t: Encoder(backend="torch", num_threads=t))
          for t in (1, 2)],
        ("torch int8 (quantize_dynamic), 2 threads", lambda: TorchInt8(2)),
        ("Encoder torch fp32, 2 threads, max_seq_length 128",
         lambda: Encoder(backend="torch", num_threads=2, max_seq_length=128)),
    ]
    if importlib.util.find_spec("onnxruntime") is not None:
        variants += [(f"Encoder onnxruntime fp32, {t} thread(s)",
                      lambda t=t: Encoder(backend="onnx", num_threads=t)) for t in (1, 2)]
        variants += [("onnxruntime int8 per-channel, 2 threads", lambda: onnx_int8(2, False)),
                     ("onnxruntime int8, FFN output fp32, 2 threads", lambda: onnx_int8(2, True))]

    print("\n| encoder | p50 ms (sample) | p99 ms (sample) | p50 ms (chat) | batch-32 prompts/s "
          "| min / mean cosine vs fp32 |")
    print("|---|---|---|---|---|---|")
    for name, make in [] if args.skip_variants else variants:
        torch.set_num_threads(2)  # the 1-thread variants set their own
        encoder = make()
        p50, p99 = single_prompt_latency_ms(encoder.embed, prompts, args.best_of)
        chat_p50, _ = single_prompt_latency_ms(encoder.embed, chat, args.best_of)
        throughput = batch_throughput(encoder.embed, prompts, args.best_of)
        low, mean = cosine_to_reference(encoder.embed(prompts), reference_vectors)
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {chat_p50:.1f} | {throughput:.0f} "
              f"| {low:.4f} / {mean:.4f} |", flush=True)

    torch.set_num_threads(2)
    encoder = Encoder(num_threads=2)
    print(f"\n| BatchingEncoder over Encoder(backend={encoder.backend}) | clients | max_wait_ms | prompts/s "
          "| p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for clients, wait in ((1, 0.0), (16, 0.0), (64, 0.0), (64, 2.0), (256, 0.0)):
        for corpus, label in ((CHAT_PROMPTS * 30, "chat"), (prompts * 2, "MMLU")):
            runs = [asyncio.run(concurrent_throughput(encoder, corpus, clients, wait))
                    for _ in range(args.best_of)]
            rate, p50, p99 = max(runs)  # the run least disturbed by other tenants
            print(f"| {label} prompts | {clients} | {wait:g} | {rate:.0f} | {p50:.1f} | {p99:.1f} |",
                  flush=True)

    router = load_router("default")
    vectors = encoder.embed(prompts)
    timings = []
    for i, p in enumerate(prompts):
        started = time.perf_counter()
        router.score([p], vectors[i : i + 1])
        timings.append((time.perf_counter() - started) * 1000)
    print(f"\nhead score latency (default router, embedding given): p50 {statistics.median(timings):.3f} ms, "
          f"p99 {np.percentile(timings, 99):.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
