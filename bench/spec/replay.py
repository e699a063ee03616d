"""Replay near-duplicate drafting offline: how close to 4× can any drafting policy get on these answers?

Greedy verification accepts a draft's longest prefix equal to the target's own answer, so once the
target's answers are recorded, every drafting policy can be replayed without the target: retrieval
drafts come from the real `NgramDrafter`, and a draft model's drafts from its teacher-forced argmax
(its draft from position i agrees with the answer exactly as far as its argmax does, given the answer
so far). Cost per step is `engine.adaptive.verify_cost` plus the draft model's measured cost per
drafted token. This leaves out prefill and the engine's overhead, so it reads as decode speedup.

    .venv/bin/python -m bench.spec.replay record --first 4 --questions 8 --tokens 128  # ~30 min: the 1.5B on this CPU
    .venv/bin/python -m bench.spec.replay replay

Policies: `retrieval` (cached answer only), `engine` (retrieval, then the draft model: what
`ngram+draft_model` does), and `oracle` (at every step whichever of the two drafts is accepted further,
paying only for that one: a ceiling for any way of choosing between them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.spec.run import DRAFT, NEAR_DUPLICATES, TARGET, copied_share, near_duplicate
from drafters.ngram import NgramDrafter
from engine.adaptive import AdaptiveK, verify_cost
from engine.store import turnout_home
from engine.types import SamplingParams

RECORDS = turnout_home() / "bench" / "near_duplicate_answers.json"


@dataclass
class Replayed:
    """A DraftContext over a recorded answer."""

    prompt_ids: list[int]
    reference_ids: list[int]
    output_ids: list[int]
    id: int = 0
    params: SamplingParams = field(default_factory=SamplingParams)
    lengths: dict[str, AdaptiveK] = field(default_factory=dict)

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    k_max: int = 16

    def draft_k(self, source: str, cost: float) -> int:
        return self.lengths.setdefault(source, AdaptiveK(k=4, k_max=self.k_max, draft_cost=cost)).k


def model_draft(argmax: list[int], answer: list[int], i: int, k: int) -> list[int]:
    """The draft model's k tokens from position i: its argmax while it agrees with the answer, then one
    wrong token (what follows a rejection is never looked at)."""
    draft = []
    for j in range(i, min(i + k, len(answer))):
        draft.append(argmax[j])
        if argmax[j] != answer[j]:
            break
    return draft


def accepted_length(draft: list[int], answer: list[int], i: int) -> int:
    n = 0
    while n < len(draft) and i + n < len(answer) and draft[n] == answer[i + n]:
        n += 1
    return n


def replay(record: dict, policy: str, draft_cost: float, k_max: int = 16) -> tuple[int, float]:
    """(tokens after the first, cost in target steps) of decoding one recorded answer under `policy`."""
    answer, argmax = record["answer"], record["draft_argmax"]
    seq = Replayed(record["prompt_ids"], record["reference"], answer[:1], k_max=k_max)
    lookup, i, cost = NgramDrafter(), 1, 0.0
    while i < len(answer):
        retrieved = lookup.propose(seq, k_max).tokens
        modelled = [] if policy == "retrieval" else model_draft(argmax, answer, i, seq.draft_k("model", draft_cost))
        got_r, got_m = accepted_length(retrieved, answer, i), accepted_length(modelled, answer, i)
        use_model = not retrieved if policy == "engine" else policy == "oracle" and got_m > got_r
        draft, got, source = (modelled, got_m, "model") if use_model else (retrieved, got_r, "ngram")
        cost += verify_cost(len(draft) + 1) + (draft_cost * len(draft) if use_model else 0.0)
        if draft and source in seq.lengths:
            seq.lengths[source].update(len(draft), got)
        i += got + 1
        seq.output_ids = answer[:i]
    return len(answer) - 1, cost


async def record(path: Path, first: int, questions: int, tokens: int) -> None:
    from bench.datasets import mtbench_questions
    from drafters.build import build_drafter
    from drafters.model import ModelDrafter
    from engine.engine import Engine
    from engine.speculative import SpeculativeConfig

    engine = Engine.load(TARGET, max_batch_size=1, prefix_cache_mb=0)
    engine.scheduler.drafter = build_drafter(SpeculativeConfig(method="ngram"), engine.loaded)
    draft = build_drafter(SpeculativeConfig(method="draft_model", draft_model=DRAFT), engine.loaded)
    assert isinstance(draft, ModelDrafter)
    params = SamplingParams(max_tokens=tokens, temperature=0.0)

    async def answer(ids: list[int]) -> list[int]:
        return [t async for delta in engine.generate(ids, params) for t in delta.token_ids]

    records = []
    try:
        for question in mtbench_questions()[first : first + questions]:
            for kind in NEAR_DUPLICATES.values():
                original, again = (engine.encode_chat(messages) for messages in near_duplicate(kind, question))
                reference, answered = await answer(original), await answer(again)
                records.append({"kind": kind, "prompt_ids": again, "reference": reference, "answer": answered,
                                "draft_argmax": teacher_forced_argmax(draft, again, answered),
                                "draft_cost": draft.cost})
                print(kind, len(reference), len(answered), flush=True)
    finally:
        engine.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))


def teacher_forced_argmax(draft, prompt_ids: list[int], answer: list[int]) -> list[int]:
    """The draft model's greedy token at each answer position, given the true answer before it."""
    import torch

    with torch.inference_mode():
        logits = draft.model(input_ids=torch.tensor([prompt_ids + answer])).logits[0, len(prompt_ids) - 1 : -1]
    best = logits.argmax(-1)
    return (draft.kept_tokens[best] if draft.kept_tokens is not None else best).tolist()


def report(path: Path, k_max: int = 16) -> None:
    records = json.loads(path.read_text())
    print("| near-duplicate | answers | same as cached (prefix) | retrieval | engine | oracle |")
    print("|---|---|---|---|---|---|")
    for kind in NEAR_DUPLICATES.values():
        mine = [r for r in records if r["kind"] == kind]
        same = copied_share([r["answer"] for r in mine], [r["reference"] for r in mine])
        speed = []
        for policy in ("retrieval", "engine", "oracle"):
            totals = [replay(r, policy, r["draft_cost"], k_max) for r in mine]
            speed.append(f"{sum(t for t, _ in totals) / sum(c for _, c in totals):.2f}×")
        print(f"| {kind} | {len(mine)} | {same:.0%} | " + " | ".join(speed) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["record", "replay"])
    parser.add_argument("--first", type=int, default=4, help="first MT-Bench question (bench.spec.run's 4-prompt "
                        "near-duplicates start at 4)")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--k-max", type=int, default=16, help="longest draft (max_speculative_tokens)")
    args = parser.parse_args()
    if args.command == "record":
        asyncio.run(record(args.records, args.first, args.questions, args.tokens))
    report(args.records, args.k_max)


if __name__ == "__main__":
    main()
