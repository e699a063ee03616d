"""Transfer sanity check without outcome data: which MT-Bench categories a router sends to the large model.

MT-Bench's 80 first turns come in 8 categories of 10. No answers or judgements are read (there are none
here); the check only shows whether a router trained on MMLU puts the kinds of prompt where a strong model
is known to pull ahead (math, reasoning, coding) above the ones where it matters less, at a 30% strong
fraction. A diagnostic, never a training or tuning signal.

    .venv/bin/python -m bench.router.mtbench_categories [--routers default embedding length] [--fraction 0.3]

A second table follows each question into its second turn (a follow-up such as "Now rewrite it as a
limerick."), at the same threshold: how many conversations go large when the router scores the last user
turn alone (`routing.turns: last`) or the conversation's hardest turn (`conversation`, the default), and
how many of those that began large the last-turn score moves to the small model for their follow-up.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.common import markdown_table
from bench.datasets import mtbench_rows
from router_models import load_router

CATEGORIES = ["math", "reasoning", "coding", "extraction", "stem", "humanities", "writing", "roleplay"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routers", nargs="+", default=["default", "embedding", "length"])
    parser.add_argument("--fraction", type=float, default=0.3, help="share of prompts sent to the large model")
    args = parser.parse_args()
    rows = mtbench_rows()
    strong = round(args.fraction * len(rows))
    table, follow_ups = [], []
    for name in args.routers:
        router = load_router(name)
        scores = np.asarray(router.score([row["turns"][0] for row in rows]), dtype=float)
        top = np.argsort(-scores, kind="stable")[:strong]
        counts = {c: sum(rows[i]["category"] == c for i in top) for c in CATEGORIES}
        totals = {c: sum(row["category"] == c for row in rows) for c in CATEGORIES}
        table.append([name, *(f"{counts[c]}/{totals[c]}" for c in CATEGORIES)])
        first_large = np.isin(np.arange(len(rows)), top)
        threshold = scores[top].min()
        last_large = np.asarray(router.score([row["turns"][1] for row in rows]), dtype=float) >= threshold
        conversation_large = first_large | last_large  # the hardest turn's score, at the same threshold
        follow_ups.append([name, str(first_large.sum()), str(last_large.sum()), str((first_large & ~last_large).sum()),
                           str(conversation_large.sum())])
    print(f"MT-Bench first turns sent large at a {args.fraction:.0%} strong fraction ({strong} of {len(rows)}):")
    print(markdown_table(["router", *CATEGORIES], table))
    print("\nTheir follow-ups (second turns), same threshold (scoring the conversation never moves one down):")
    print(markdown_table(["router", "first turns large", "follow-ups large, last turn scored",
                          "of which began large, moved small", "follow-ups large, conversation scored"], follow_ups))


if __name__ == "__main__":
    main()
