"""bench/engine: llama.cpp (llama-cpp-python) on the very GGUF files the embedded engine converts to fp32,
so the engine's table has the CPU runtime users would otherwise pick next to it.

    .venv/bin/python -m bench.engine.gguf                      # export the verified GGUFs (project venv)
    /work/llamavenv/bin/python -m bench.engine.llamacpp --gguf-dir ~/.cache/turnout/gguf [--tokens 32]

Runs in its own venv with only llama-cpp-python: imports nothing that pulls in torch or transformers.
Same prompts, chat template (the GGUF's), greedy decoding and fixed length (EOS ignored) as
bench/engine/run.py. The high-level `Llama` API decodes one sequence per context (llama_cpp.server
serialises requests behind a lock), so it cannot batch concurrent streams: the comparison point for the
engine's concurrent column is the same requests run one after another.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import median

from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from bench.common import Timing, markdown_table
from bench.engine.prompts import PROMPTS

MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
FILE_TYPES = {"0": "F32", "1": "F16", "2": "Q4_0", "3": "Q4_1", "7": "Q8_0", "15": "Q4_K_M", "17": "Q5_K_M",
              "18": "Q6_K"}  # llama_ftype values of the GGUF's general.file_type


def chat_ids(llm: Llama, prompt: str) -> list[int]:
    """What Engine.encode_chat feeds the engine: the GGUF's chat template rendered, tokenized without BOS."""
    special = {"eos_token": llm.detokenize([llm.token_eos()], special=True).decode(),
               "bos_token": llm.detokenize([llm.token_bos()], special=True).decode()}
    formatter = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], **special)
    text = formatter(messages=[{"role": "user", "content": prompt}]).prompt
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def timed_generate(llm: Llama, ids: list[int], tokens: int) -> Timing:
    """Greedy, exactly `tokens` new tokens (generate() never stops on EOS itself), no prefix-cache reuse."""
    llm.reset()  # generate() would otherwise reuse the KV cache of a shared prompt prefix (the system prompt)
    start = time.perf_counter()
    first = None
    count = 0
    for _ in llm.generate(ids, temp=0.0, repeat_penalty=1.0):
        count += 1
        if first is None:
            first = time.perf_counter() - start
        if count == tokens:
            break
    return Timing(count, first or 0.0, time.perf_counter() - start)


def bench_model(gguf: Path, threads: int, tokens: int, requests: int) -> list[object]:
    llm = Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    try:
        timed_generate(llm, chat_ids(llm, "warm up"), 4)
        runs = [timed_generate(llm, chat_ids(llm, prompt), tokens) for prompt in PROMPTS[:requests]]
        quant = FILE_TYPES.get(llm.metadata.get("general.file_type", ""), llm.metadata.get("general.file_type"))
    finally:
        llm.close()
    decode = [(r.tokens - 1) / (r.total_s - r.ttft_s) for r in runs]
    return [
        gguf.stem,
        quant,
        threads,
        f"{sum(r.tokens / r.total_s for r in runs) / len(runs):.2f}",
        f"{median(decode):.2f}",
        f"{median(r.ttft_s for r in runs) * 1000:.0f}",
        f"{sum(r.tokens for r in runs) / sum(r.total_s for r in runs):.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf-dir", type=Path, default=Path("~/.cache/turnout/gguf"),
                        help="where bench.engine.gguf exported NAME.gguf")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    files = [args.gguf_dir.expanduser() / f"{name}.gguf" for name in args.models]
    if missing := [str(f) for f in files if not f.is_file()]:
        parser.error(f"missing {', '.join(missing)}: run `.venv/bin/python -m bench.engine.gguf` first")
    rows = [bench_model(gguf, threads, args.tokens, args.requests) for gguf in files for threads in args.threads]
    print(markdown_table(
        ["model", "quant", "threads", "tok/s (1 stream)", "decode tok/s p50", "TTFT p50 ms",
         f"{args.requests} sequential tok/s"],
        rows,
    ))


if __name__ == "__main__":
    main()
