"""How to weigh the judge against the verifier: record both on labelled pairs once, then replay policies.

A judge verdict costs ~1.4 s on this CPU, so the pair-mode evidence (cosine, hard guard, verifier P, judge
log-odds) is recorded once per pair and every policy is scored offline from it:

- "two bars": the verifier's P ≥ b, then the judge's log-odds > j (the default until 2026-12-01);
- "summed": P ≥ floor to be judged at all, then log-odds + w · logit(P) > bar (the default since; bar 0.5
  with the judge prompt of 2026-12-01, session 8, 1.0 before).

    .venv/bin/python -m bench.cache.judge_grid record --out /tmp/judge_table.json \\
        [--shard I N] --pairs bench/cache/pairs.jsonl bench/cache/pairs_holdout*.jsonl  # ~45 min on two cores
    .venv/bin/python -m bench.cache.judge_grid grid --table /tmp/judge_table*.json

Pair mode: each b is checked against its own a only (no distractors), so numbers run a little higher than
semantic_bench's store mode; they are for choosing, the store mode is for reporting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cache.semantic_bench import embed_all, load_judge, load_pairs
from gateway.cache import CacheConfig
from gateway.cache.matching.verifier import assess, logit

Row = dict[str, Any]


def record(pair_files: list[Path], out: Path, judge_model: str, shard: int, shards: int) -> None:
    """Evidence for every pair past the cosine floor and the hard guards (resumable: rows already in `out`
    are kept). Totals per label go in too, as the denominators."""
    table: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"rows": {}, "totals": {}}
    config = CacheConfig()
    pending: list[tuple[str, Row]] = []
    totals: Counter[str] = Counter()
    for path in pair_files:
        pairs = load_pairs(path)
        vectors = embed_all([text for pair in pairs for text in (pair["a"], pair["b"])])
        for pair in pairs:
            totals[pair["label"]] += 1
            similarity = float(vectors[pair["a"]] @ vectors[pair["b"]])
            if similarity < config.similarity_threshold:
                continue
            assessment = assess(pair["b"], pair["a"], similarity, config.verifier_model)
            if assessment.hard is None:
                row = {"file": path.name, "label": pair["label"], "kind": pair["kind"], "cosine": similarity,
                       "p": assessment.probability}
                pending.append((pair["a"] + "\0" + pair["b"], row))
    table["totals"] = dict(totals)
    judge = load_judge(judge_model)
    todo = [(key, row) for i, (key, row) in enumerate(pending) if i % shards == shard and key not in table["rows"]]
    print(f"{len(todo)} verdicts to record", flush=True)
    for done, (key, row) in enumerate(todo, 1):
        cached, new = key.split("\0")
        row["judge"] = asyncio.run(judge.log_odds(cached, new))
        table["rows"][key] = row
        if done % 25 == 0 or done == len(todo):
            out.write_text(json.dumps(table))
            print(done, flush=True)


def two_bars(bar: float, min_log_odds: float) -> Callable[[Row], bool]:
    return lambda row: row["p"] >= bar and row["judge"] > min_log_odds


def summed(floor: float, weight: float, bar: float) -> Callable[[Row], bool]:
    return lambda row: row["p"] >= floor and row["judge"] + weight * logit(row["p"]) > bar


def score(rows: list[Row], totals: dict[str, int], policy: Callable[[Row], bool]) -> str:
    hits = Counter(row["label"] for row in rows if policy(row))
    return (f"{hits['paraphrase'] / totals['paraphrase']:.1%} / {hits['contrast'] / totals['contrast']:.2%} "
            f"({hits['contrast']})")


def grid(table_paths: list[Path]) -> None:
    tables = [json.loads(path.read_text()) for path in table_paths]  # shards of one recording
    rows = [row for table in tables for row in table["rows"].values() if "judge" in row]
    totals = tables[0]["totals"]
    print(f"{len(rows)} judged pairs; {totals['paraphrase']} paraphrases, {totals['contrast']} contrasts in all; "
          "paraphrase hits / false hits (false hits)\n")
    print("two bars: verifier P ≥ b, then judge log-odds > j\n")
    js = (0.0, 0.5, 1.0, 2.0)
    print("| b | " + " | ".join(f"j = {j}" for j in js) + " |\n|---" * 1 + "|---" * len(js) + "|")
    for b in (0.35, 0.25, 0.15, 0.10, 0.05):
        print(f"| {b} | " + " | ".join(score(rows, totals, two_bars(b, j)) for j in js) + " |")
    print("\nsummed: verifier P ≥ floor, then judge log-odds + w · logit(P) > bar\n")
    bars = (0.0, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0)
    print("| floor | w | " + " | ".join(f"bar {bar}" for bar in bars) + " |\n|---|---" + "|---" * len(bars) + "|")
    for floor in (0.0, 0.05, 0.10, 0.20):
        for weight in (0.25, 0.5, 1.0):
            print(f"| {floor} | {weight} | "
                  + " | ".join(score(rows, totals, summed(floor, weight, bar)) for bar in bars) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record")
    rec.add_argument("--pairs", type=Path, nargs="+", required=True)
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    rec.add_argument("--shard", type=int, nargs=2, default=(0, 1), metavar=("I", "N"),
                     help="record every N-th pair from the I-th (one process per core, one --out each)")
    show = commands.add_parser("grid")
    show.add_argument("--table", type=Path, nargs="+", required=True, help="the shards of one recording")
    args = parser.parse_args()
    if args.command == "record":
        record(args.pairs, args.out, args.judge, *args.shard)
    else:
        grid(args.table)


if __name__ == "__main__":
    main()
