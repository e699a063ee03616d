"""The cascade (`routing.cascade`) against prompt routers, at equal large-tier share, on labelled outcomes.

`turnout router label` records each small answer's confidence (geometric-mean token probability, what
the cascade judges by). Escalating the least confident answers first is a ranking like a router's, so
the same PGR curve and APGR (router_models/evaluate.py) compare them: the cascade's score is
1 − confidence. What the curve does not show is the cascade's extra cost: it always pays for the small
answer, so at large-tier share c it costs (small + c · large) per request against the router's
((1 − c) · small + c · large). The second table charges it: at a cost budget B (per request, a
large answer = 1, a small one = `--small-cost`), a router can send c = (B − s) / (1 − s) of requests
large and the cascade only c = B − s, and each is read off its own curve at that share.

    .venv/bin/python bench/router/cascade_curve.py OUTCOMES.jsonl [--router default --router length ...] \
        [--small-cost 0.33]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from router_models import load_router  # noqa: E402
from router_models.baselines import PromptLengthRouter, RandomRouter  # noqa: E402
from router_models.embedding_cache import cached_embed  # noqa: E402
from router_models.encoders import SHARED_ENCODER_NAME, encoder_named  # noqa: E402
from router_models.evaluate import pgr_curve  # noqa: E402

SHARES = (0.1, 0.2, 0.3, 0.5)
BUDGETS = (0.5, 0.6, 0.7, 0.8)
CASCADE = "cascade (small answer's confidence)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outcomes", type=Path)
    parser.add_argument("--router", action="append", default=None, help="router names (default: default, embedding)")
    parser.add_argument("--small-cost", type=float, default=0.33,
                        help="a small answer's cost, a large one's = 1 (default: the tiers' parameter ratio)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.outcomes.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row.get("weak_confidence") is not None]
    prompts = [row["prompt"] for row in rows]
    weak = np.array([row["weak_quality"] for row in rows], dtype=float)
    strong = np.array([row["strong_quality"] for row in rows], dtype=float)
    scores = {CASCADE: 1.0 - np.array([row["weak_confidence"] for row in rows])}
    for name in args.router or ["default", "embedding"]:
        router = load_router(name)
        embeddings = (cached_embed(encoder_named(SHARED_ENCODER_NAME), prompts, show_progress=False)
                      if router.needs_embeddings else None)
        scores[name] = router.score(prompts, embeddings)
    for baseline in (RandomRouter(), PromptLengthRouter()):
        scores[baseline.name] = baseline.score(prompts)

    print(f"{args.outcomes}: {len(rows)} prompts; small {weak.mean():.3f}, large {strong.mean():.3f} "
          f"(both {np.mean((weak > 0) & (strong > 0)):.3f})")
    curves = {name: pgr_curve(score, weak, strong) for name, score in scores.items()}
    print("| ranking | APGR | " + " | ".join(f"quality at {share:.0%} large" for share in SHARES) + " |")
    print("|---|---|" + "---|" * len(SHARES))
    for name, curve in curves.items():
        quality = weak.mean() + curve.at(np.array(SHARES)) * (strong.mean() - weak.mean())
        print(f"| {name} | {curve.apgr:.3f} | " + " | ".join(f"{q:.3f}" for q in quality) + " |")

    small = args.small_cost
    print(f"\nat equal cost (a small answer costs {small:g} of a large one; all-small = {small:g}, all-large = 1)")
    print("| ranking | " + " | ".join(f"quality at cost {budget:g}" for budget in BUDGETS) + " |")
    print("|---|" + "---|" * len(BUDGETS))
    for name, curve in curves.items():
        shares = [budget - small if name == CASCADE else (budget - small) / (1 - small) for budget in BUDGETS]
        quality = weak.mean() + curve.at(np.clip(np.array(shares), 0.0, 1.0)) * (strong.mean() - weak.mean())
        print(f"| {name} | " + " | ".join(f"{q:.3f}" for q in quality) + " |")


if __name__ == "__main__":
    main()
