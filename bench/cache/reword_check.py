"""Function-word rewordings: does the verifier accept a prompt against itself with one auxiliary changed?

Built from the labelled sets, not labelled by hand: every a-side that starts with one of REWORDINGS'
prefixes is asked again with the other prefix ("How do I X?" -> "How can I X?"), the same question by
construction. Printed per rewording: how many a cosine floor and the verifier accept (hard guards included,
as `verdict` applies them). bench/cache/RESULTS.md (2026-11-30) found the contextual verifier rejecting
494 of 495 "How can I" rewordings of the five sets of that day.

    .venv/bin/python -m bench.cache.reword_check --model contextual [--pairs bench/cache/pairs*.jsonl]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from bench.cache.semantic_bench import PAIRS, embed_all, load_pairs
from gateway.cache import CacheConfig
from gateway.cache.matching import VerifierModel
from gateway.cache.matching.verifier import verdict

SETS = sorted(PAIRS.parent.glob("pairs*.jsonl"))
REWORDINGS = (("How do I ", "How can I "), ("What is ", "What's "), ("Can you ", "Could you "))


def reworded(texts: list[str], old: str, new: str) -> list[tuple[str, str]]:
    """(original, reworded) for every text that starts with `old`, without repeats."""
    return [(text, new + text[len(old):]) for text in sorted(set(texts)) if text.startswith(old)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=Path, nargs="+", default=SETS)
    parser.add_argument("--model", choices=get_args(VerifierModel), default=CacheConfig().verifier_model)
    parser.add_argument("--threshold", type=float, default=CacheConfig().similarity_threshold)
    args = parser.parse_args()
    sides = [p["a"] for path in args.pairs for p in load_pairs(path)]
    for old, new in REWORDINGS:
        pairs = reworded(sides, old, new)
        if not pairs:
            continue
        vectors = embed_all([text for pair in pairs for text in pair])
        rejected = [(cached, query) for cached, query in pairs
                    if float(vectors[cached] @ vectors[query]) < args.threshold
                    or verdict(query, cached, float(vectors[cached] @ vectors[query]), None, args.model) is not None]
        print(f"{args.model}: {old.strip()!r} -> {new.strip()!r}: accepted {len(pairs) - len(rejected)} of "
              f"{len(pairs)} ({1 - len(rejected) / len(pairs):.1%}), sets: {', '.join(p.name for p in args.pairs)}")
        for cached, query in rejected[:5]:
            print(f"  rejected: {query!r} <- {cached!r}")


if __name__ == "__main__":
    main()
