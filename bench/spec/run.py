"""bench/spec: speculative decoding on vs off, same engine, same prompts, Qwen-1.5B target on this CPU.

Workloads (each: tokens/s with speculation off, then on, in the same run):
  mtbench    MT-Bench first turns           drafter: 0.5B draft model (int8 draft step), or n-gram first
  sharegpt   ShareGPT first human turns     drafter: the same
  code-edit  HumanEval functions to edit    drafter: n-gram prompt lookup
  near-dup   reworded MT-Bench questions    drafter: retrieval (the cached answer to the original), or
                                            retrieval first, then the draft model
  near-dup-edited  the same, retyped (lower-case start, no final "?")          drafter: as near-dup
  near-dup-clock   the same question, system prompt's clock 5 minutes later    drafter: as near-dup

    .venv/bin/python -m bench.spec.run [--prompts 4] [--tokens 96] [--workloads mtbench code-edit ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from bench.common import Timing, markdown_table, timed_generate
from bench.datasets import humaneval_code, mtbench_questions, sharegpt_prompts
from drafters.build import build_drafter
from drafters.combined import FirstProposal
from drafters.ngram import NgramDrafter
from engine.cpu_share import CPU_SHARE
from engine.drafting import Drafter
from engine.engine import Engine
from engine.speculative import SpeculativeConfig
from engine.types import DEFAULT_PREFIX_CACHE_MB, SamplingParams

TARGET = "qwen2.5-coder-1.5b-instruct"
DRAFT = "qwen2.5-coder-0.5b-instruct"
EDIT = ("Rename the function in this Python code to `solution` and add a one-line comment at the top. "
        "Return the complete code and nothing else.\n\n```python\n{code}```")


Messages = list[dict[str, str]]
NEAR_DUPLICATES = {"near-dup": "reworded", "near-dup-edited": "edited", "near-dup-clock": "clock"}
PREFILL_ONLY = SamplingParams(max_tokens=1, temperature=0.0)
CLOCK = "You are a helpful assistant. The current time is 2026-11-30 {} UTC."


def near_duplicate(kind: str, question: str) -> tuple[Messages, Messages]:
    """(the request whose answer is cached, a request that asks the same but misses the exact cache)."""
    question = question.strip()

    def user(text: str) -> Messages:
        return [{"role": "user", "content": text}]

    if kind == "reworded":  # asked again, reworded politely
        return user(question), user(f"Please answer this: {question}")
    if kind == "edited":  # retyped: lower-case start, no final punctuation
        return user(question), user(question[0].lower() + question[1:].rstrip("?.!"))
    # "clock": an application whose system prompt carries the time, so every request text differs
    return ([{"role": "system", "content": CLOCK.format("09:00")}, *user(question)],
            [{"role": "system", "content": CLOCK.format("09:05")}, *user(question)])


async def measure(engine: Engine, prompts: list[str] | list[Messages], params: SamplingParams,
                  drafters: list[Drafter], references: list[list[int]] | None = None,
                  originals: list[Messages] | None = None) -> tuple[list[Timing], list[list[Timing]]]:
    """Off, then on with each of `drafters`, interleaved prompt by prompt, so load drift on the machine
    hits all alike. Each run has a prefix-cache scope of its own, holding only
    the original request's prompt for a near-duplicate (as after serving it) and nothing otherwise: an on
    run never reuses another run's prefill."""
    off: list[Timing] = []
    ons: list[list[Timing]] = [[] for _ in drafters]
    for i, prompt in enumerate(prompts):
        for run, (drafter, runs) in enumerate([(None, off), *zip(drafters, ons, strict=True)]):
            speculative = drafter is not None
            if speculative:
                engine.scheduler.drafter = drafter
            scope = f"{run}-{i}"
            if originals and engine.prefix_cache is not None:  # prefill the original alone
                await timed_generate(engine, originals[i], PREFILL_ONLY, speculative=False, cache_scope=scope)
            options = {"reference_ids": references[i]} if references and speculative else {}
            runs.append(await timed_generate(engine, prompt, params, speculative=speculative, cache_scope=scope,
                                             **options))
        if any(on[-1].tokens != off[-1].tokens for on in ons):
            raise AssertionError(f"speculation changed the output length on prompt {i}")
    return off, ons


def copied_share(answers: list[list[int]], references: list[list[int]]) -> float:
    """How much of the near-duplicates' answers is the cached answer word for word, up to where they first
    differ: the part retrieval can draft in full; after it the answers diverge (the speedup's ceiling)."""
    pairs = zip(answers, references, strict=True)
    same = sum(len(os.path.commonprefix([answer, reference])) for answer, reference in pairs)
    return same / sum(len(answer) for answer in answers)


def summarise(name: str, drafter: str, off: list[Timing], on: list[Timing], copied: str = "") -> list[object]:
    """Speedup end to end (prefill included) and of decoding alone (after the first token)."""
    off_tps = sum(t.tokens for t in off) / sum(t.total_s for t in off)
    on_tps = sum(t.tokens for t in on) / sum(t.total_s for t in on)
    decode = sum(t.decode_s for t in off) / sum(t.decode_s for t in on)
    drafted = sum(t.drafted for t in on)
    accepted = sum(t.accepted for t in on)
    return [name, drafter, len(on), sum(t.tokens for t in on), f"{off_tps:.2f}", f"{on_tps:.2f}",
            f"**{on_tps / off_tps:.2f}×**", f"{decode:.2f}×", f"{accepted / max(1, drafted):.2f}", copied]


async def run(args: argparse.Namespace) -> list[list[object]]:
    engine = Engine.load(TARGET, max_batch_size=1,
                         prefix_cache_mb=0 if args.no_prefix_cache else DEFAULT_PREFIX_CACHE_MB)
    loaded = engine.loaded
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0)
    model = build_drafter(SpeculativeConfig(method="draft_model", draft_model=DRAFT), loaded)
    ngram = build_drafter(SpeculativeConfig(method="ngram"), loaded)
    assert model is not None and ngram is not None
    lookup_mins = args.lookup_min or [SpeculativeConfig().ngram_min]
    combined = [FirstProposal([NgramDrafter(min_ngram=m), model]) for m in lookup_mins]
    drafters = {"draft_model": [model], "ngram": [ngram], "ngram+draft_model": combined}
    n = args.prompts
    workloads = {
        "mtbench": (args.chat_drafter, mtbench_questions()[:n]),
        "sharegpt": (args.chat_drafter, sharegpt_prompts(n, max_chars=600)),
        "code-edit": (args.edit_drafter, [EDIT.format(code=code) for code in humaneval_code()[:n]]),
        **{name: (args.near_dup_drafter, mtbench_questions()[n:2 * n]) for name in NEAR_DUPLICATES},
    }
    rows = []
    try:
        for name in args.workloads:
            kind, prompts = workloads[name]
            engine.speculative = SpeculativeConfig(num_speculative_tokens=args.k)
            references = originals = None
            if name in NEAR_DUPLICATES:  # the cache holds the model's answer to the original request
                pairs = [near_duplicate(NEAR_DUPLICATES[name], question) for question in prompts]
                references = [[t async for d in engine.generate(engine.encode_chat(original), params,
                                                                 speculative=False) for t in d.token_ids]
                              for original, _ in pairs]
                originals, prompts = [original for original, _ in pairs], [again for _, again in pairs]
            label = kind.replace("ngram", "retrieval") if name in NEAR_DUPLICATES else kind
            labels = [f"{label} (lookup min {m})" for m in lookup_mins] if kind == "ngram+draft_model" else [label]
            for threads in args.threads:  # outputs do not depend on the thread count: one set of references
                engine.scheduler.threads = threads or None
                start = time.perf_counter()
                off, ons = await measure(engine, prompts, params, drafters[kind], references, originals)
                for on, drafter_label in zip(ons, labels, strict=True):
                    copied = f"{copied_share([t.token_ids for t in on], references):.0%}" if references else ""
                    rows.append([threads or f"all ({CPU_SHARE.cores})",
                                 *summarise(name, drafter_label, off, on, copied)])
                    print(f"{name}: {time.perf_counter() - start:.0f} s", rows[-1], flush=True)
    finally:
        engine.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--chat-drafter", choices=["draft_model", "ngram+draft_model"], default="draft_model",
                        help="drafter for the MT-Bench and ShareGPT workloads")
    parser.add_argument("--edit-drafter", choices=["ngram", "ngram+draft_model"], default="ngram",
                        help="drafter for the code-edit workload")
    parser.add_argument("--near-dup-drafter", choices=["ngram", "ngram+draft_model"], default="ngram",
                        help="drafter for near-duplicates: the cached answer only, or the draft model where it misses")
    parser.add_argument("--lookup-min", type=int, nargs="+",
                        help="ngram+draft_model: the lookup's shortest match, each in turn on the same prompts "
                             "(default: the config's, 1)")
    parser.add_argument("--no-prefix-cache", action="store_true",
                        help="prefill every prompt whole (by default a near-duplicate reuses its original's prefix)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch threads per step, each in turn (0: all cores, as an engine alone in a process "
                             "takes them)")
    parser.add_argument("--workloads", nargs="+", default=["mtbench", "sharegpt", "code-edit", *NEAR_DUPLICATES])
    rows = asyncio.run(run(parser.parse_args()))
    print(markdown_table(["threads", "workload", "drafter", "prompts", "tokens (on)", "off tok/s", "on tok/s",
                          "speedup", "decode speedup", "acceptance", "same as cached"], rows))


if __name__ == "__main__":
    main()
