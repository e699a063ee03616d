"""Build drafters/token_ranks/<vocabulary hash>.npy: token ids by frequency in ShareGPT conversations.

    .venv/bin/python -m bench.spec.token_frequency [--model qwen2.5-coder-0.5b-instruct] [--conversations 4000]

A seeded sample of ShareGPT V3 (human and assistant turns; the prompts bench/spec measures are left
out), tokenised with the model's tokenizer; the 65,536 most frequent ids are kept, most frequent first.
"""

from __future__ import annotations

import argparse
import collections
import random

import numpy as np
from transformers import AutoTokenizer

from bench.datasets import sharegpt_conversations, sharegpt_prompts
from drafters.vocab import RANKS_DIR, vocabulary_hash
from engine.store import resolve

KEEP = 65536


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--conversations", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve(args.model))
    measured = set(sharegpt_prompts(16, max_chars=600))  # bench/spec's ShareGPT prompts stay unseen
    conversations = sharegpt_conversations()
    counts: collections.Counter[int] = collections.Counter()
    for conversation in random.Random(args.seed).sample(conversations, args.conversations):
        turns = [turn.get("value", "") for turn in conversation.get("conversations", [])]
        if not measured.intersection(turns):
            for text in turns:
                counts.update(tokenizer.encode(text[:4000], add_special_tokens=False))
    ranked = np.array([token for token, _ in counts.most_common(KEEP)], dtype=np.int32)
    RANKS_DIR.mkdir(exist_ok=True)
    path = RANKS_DIR / f"{vocabulary_hash(tokenizer)}.npy"
    np.save(path, ranked)
    total = sum(counts.values())
    for limit in (16384, 32768, 65536):
        print(f"top {limit}: {sum(count for _, count in counts.most_common(limit)) / total:.2%} of {total} tokens")
    print(f"wrote {path} ({len(ranked)} ids)")


if __name__ == "__main__":
    main()
