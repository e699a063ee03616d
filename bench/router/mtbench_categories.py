"""Transfer sanity check without outcome data: which MT-Bench categories a router sends to the large model.

MT-Bench's 80 first turns come in 8 categories of 10. No answers or judgements are read (there are none
here); the check only shows whether a router trained on MMLU puts the kinds of prompt where a strong model
is known to pull ahead (math, reasoning, coding) above the ones where it matters less, at a 30% strong
fraction. A diagnostic, never a training or tuning signal.

    .venv/bin/python -m bench.router.mtbench_categories [--routers default embedding length] [--fraction 0.3]
"""

from __future__ import annotations

import argparse

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
    table = []
    for name in args.routers:
        scores = [float(s) for s in load_router(name).score([row["turns"][0] for row in rows])]
        top = sorted(range(len(rows)), key=lambda i: -scores[i])[:strong]
        counts = {c: sum(rows[i]["category"] == c for i in top) for c in CATEGORIES}
        totals = {c: sum(row["category"] == c for row in rows) for c in CATEGORIES}
        table.append([name, *(f"{counts[c]}/{totals[c]}" for c in CATEGORIES)])
    print(f"MT-Bench first turns sent large at a {args.fraction:.0%} strong fraction ({strong} of {len(rows)}):")
    print(markdown_table(["router", *CATEGORIES], table))


if __name__ == "__main__":
    main()
