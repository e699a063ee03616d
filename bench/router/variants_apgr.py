"""Does routing quality survive a cheaper encoder? Subject-held-out APGR of the default head per embedding variant.

    .venv/bin/python bench/router/variants_apgr.py --data /work/shared/data/routellm/mmlu --repeats 3

Each variant embeds all prompts with its own encoder (cached under ~/.cache/turnout/embeddings) and the
default head spec is cross-validated on those vectors, so a head is always evaluated on the variant it
would serve with. Also prints how far each variant's vectors are from the full MiniLM ones (cosine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from router_models.data import load_outcomes  # noqa: E402
from router_models.embedding_cache import cached_embed  # noqa: E402
from router_models.encoders import make_encoder  # noqa: E402
from router_models.train import DEFAULT_SPEC, MMLU_LABEL_ARTIFACTS, HeadSpec, cross_validate  # noqa: E402

VARIANTS = ["all-MiniLM-L6-v2-seq256", "all-MiniLM-L6-v2-seq64", "all-MiniLM-L6-v2-seq32",
            "all-MiniLM-L6-v2-static-input", "all-MiniLM-L6-v2-static-distilled", "all-MiniLM-L6-v2-static-input-sif",
            "all-MiniLM-L6-v2-seq256+all-MiniLM-L6-v2-static-input-sif", "all-MiniLM-L6-v2-static-input-sif-tail32",
            "all-MiniLM-L6-v2-seq256+all-MiniLM-L6-v2-static-input-sif-tail32"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/routellm/mmlu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated encoder names")
    parser.add_argument("--inputs", default="embedding+length", help="head inputs to try per variant")
    parser.add_argument("--l2", default="5e-4", help="comma-separated l2 penalties to try per variant")
    args = parser.parse_args()

    data = load_outcomes(args.data)
    reference = cached_embed(make_encoder(VARIANTS[0]), data.prompts, show_progress=True)
    print("| encoder | head inputs | l2 | APGR | CPT(50%) | CPT(80%) | min / mean cosine vs seq256 |")
    print("|---|---|---|---|---|---|---|")
    for name in args.variants.split(","):
        started = time.perf_counter()
        vectors = cached_embed(make_encoder(name), data.prompts, show_progress=True)
        fidelity = "– (other space)"
        if "static" not in name:
            cosine = np.sum(vectors * reference, axis=1)
            fidelity = f"{cosine.min():.3f} / {cosine.mean():.3f}"
        for inputs, l2 in [(i, float(l2)) for i in args.inputs.split(",") for l2 in args.l2.split(",")]:
            spec = HeadSpec(**{**DEFAULT_SPEC.__dict__, "inputs": inputs, "l2": l2})
            result = cross_validate(spec, data, vectors, repeats=args.repeats,
                                    exclude_from_training=MMLU_LABEL_ARTIFACTS)
            m = result.metrics
            print(f"| {name} | {inputs} | {l2:g} | {m.apgr:.3f} ± {result.apgr_std:.3f} | {m.cpt50:.1%} "
                  f"| {m.cpt80:.1%} | {fidelity} |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - started:.0f} s -->", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
