"""Subject-held-out APGR next to an options-removed transfer proxy, for static tables of the head/tail router.

    .venv/bin/python bench/router/transfer_proxy.py --data /work/shared/data/routellm/mmlu --repeats 3

The proxy: heads are trained on full MMLU prompts, but the held-out subjects are scored on the question
text alone (the answer options removed). Math word problems and chat prompts have no options, so a
head whose gain lives in the options' wording will not carry over. Both numbers use the same folds as
cross_validate (5-fold group K-fold over subjects, high_school_mathematics not learned from).

Tables: "input" is MiniLM's input word-piece matrix (the shipped `default`); "layer<k>" is each
word-piece's hidden state after k transformer layers with the piece alone ([CLS] piece [SEP]), built
here in ~10 s. A block's own l2 is applied by scaling it (penalty l2 on w·s is l2/s² on w).
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from router_models.data import OutcomeData, load_outcomes  # noqa: E402
from router_models.encoder import EMBEDDING_DIM, bundled_model_dir  # noqa: E402
from router_models.evaluate import routing_metrics  # noqa: E402
from router_models.static import StaticEncoder  # noqa: E402
from router_models.train import MMLU_LABEL_ARTIFACTS, fit_linear, group_folds, targets  # noqa: E402

BASE_L2 = 3e-4
TAIL = 32
HALVES = {"head": slice(0, EMBEDDING_DIM), "tail": slice(EMBEDDING_DIM, 2 * EMBEDDING_DIM)}


@dataclass(frozen=True)
class Row:
    """Blocks are (table, half, l2): which static table, which half of its head/tail vector, its penalty."""

    name: str
    blocks: tuple[tuple[str, str, float], ...]
    subject_weight_power: float = 0.0  # rows weighted by n(subject)^-power


def both(table: str, head_l2: float = BASE_L2, tail_l2: float = BASE_L2) -> tuple[tuple[str, str, float], ...]:
    return ((table, "head", head_l2), (table, "tail", tail_l2))


ROWS = [
    Row("input head/tail (shipped `default`)", both("input")),
    Row("input head/tail, l2 head 6e-4 / tail 1.5e-4, weights n^-1/2", both("input", 6e-4, 1.5e-4), 0.5),
    Row("layer1 head/tail", both("layer1")),
    Row("layer2 head/tail", both("layer2")),
    Row("layer1 head/tail, l2 head 6e-4 / tail 1.5e-4", both("layer1", 6e-4, 1.5e-4)),
    Row("layer1 head/tail, l2 head 6e-4 / tail 1.5e-4, weights n^-1/2", both("layer1", 6e-4, 1.5e-4), 0.5),
    Row("input head/tail ‖ layer1 head/tail", both("input") + both("layer1")),
    Row("layer1 head ‖ input tail", (("layer1", "head", BASE_L2), ("input", "tail", BASE_L2))),
    Row("input head ‖ layer1 tail", (("input", "head", BASE_L2), ("layer1", "tail", BASE_L2))),
    Row("layer1 head/tail ‖ input tail", both("layer1") + (("input", "tail", BASE_L2),)),
    Row("layer1 head/tail ‖ input tail, weights n^-1/2", both("layer1") + (("input", "tail", BASE_L2),), 0.5),
]


def strip_options(prompt: str) -> str:
    """The question without MMLU's answer options (and without the trailing "Answer:")."""
    return prompt.split("\nA. ")[0]


@functools.cache
def layer_table(layers: int) -> np.ndarray:
    """(vocab, 384) hidden state of each word-piece after `layers` layers, with the piece alone."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    model_dir = bundled_model_dir()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    model.encoder.layer = model.encoder.layer[:layers]
    cls, sep, size = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"), tokenizer.get_vocab_size()
    out = np.empty((size, EMBEDDING_DIM), dtype=np.float32)
    for start in range(0, size, 1024):
        ids = torch.tensor([[cls, i, sep] for i in range(start, min(start + 1024, size))])
        with torch.inference_mode():
            states = model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids),
                           output_hidden_states=True).hidden_states
        out[start : start + len(ids)] = states[layers][:, 1].numpy()
    return out


def table_vectors(table: str, texts: list[str]) -> np.ndarray:
    """Head/tail SIF vectors (n, 768) of `texts` over the named table."""
    encoder = StaticEncoder("input-sif", tail=TAIL)
    if table != "input":
        encoder._vectors = layer_table(int(table.removeprefix("layer")))  # same tokenizer and SIF weights
    return encoder.embed(texts)


def evaluate(row: Row, data: OutcomeData, views: dict, repeats: int) -> tuple[list[float], list[float], list]:
    """Per-partition APGR on full prompts and on options-removed prompts, plus the metrics."""
    import torch

    full = np.concatenate([views[t][0][:, HALVES[h]] * np.sqrt(BASE_L2 / l2) for t, h, l2 in row.blocks], axis=1)
    stripped = np.concatenate([views[t][1][:, HALVES[h]] * np.sqrt(BASE_L2 / l2) for t, h, l2 in row.blocks], axis=1)
    length = np.log1p([len(p) for p in data.prompts])
    length_stripped = np.log1p([len(strip_options(p)) for p in data.prompts])
    names, inverse, counts = np.unique(data.groups, return_inverse=True, return_counts=True)
    row_weight = counts[inverse].astype(np.float64) ** -row.subject_weight_power
    excluded = np.isin(data.groups, list(MMLU_LABEL_ARTIFACTS))
    y = targets("gain2", data.weak, data.strong).astype(np.float32)
    apgr, proxy, metrics = [], [], []
    for repeat in range(repeats):
        scores, scores_stripped = np.zeros(len(data)), np.zeros(len(data))
        for train, test in group_folds(data.groups, 5, seed=repeat):
            train = train[~excluded[train]]
            mean, std = length[train].mean(), length[train].std()
            x = np.concatenate([full, ((length - mean) / std)[:, None]], axis=1).astype(np.float32)
            xs = np.concatenate([stripped, ((length_stripped - mean) / std)[:, None]], axis=1).astype(np.float32)
            (weight, bias), = fit_linear(torch.tensor(x[train]), torch.tensor(y[train]), BASE_L2, row_weight[train])
            scores[test] = _gain(x[test] @ weight.T + bias)
            scores_stripped[test] = _gain(xs[test] @ weight.T + bias)
        metrics.append(routing_metrics(scores, data.weak, data.strong))
        apgr.append(metrics[-1].apgr)
        proxy.append(routing_metrics(scores_stripped, data.weak, data.strong).apgr)
    return apgr, proxy, metrics


def _gain(logits: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-logits))
    return p[:, 0] - p[:, 1]


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f} ({' / '.join(f'{v:.3f}' for v in values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/routellm/mmlu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    data = load_outcomes(args.data)
    stripped = [strip_options(p) for p in data.prompts]
    tables = sorted({t for row in ROWS for t, _, _ in row.blocks})
    views = {t: (table_vectors(t, data.prompts), table_vectors(t, stripped)) for t in tables}
    length = routing_metrics(np.log1p([len(p) for p in data.prompts]), data.weak, data.strong)
    length_proxy = routing_metrics(np.log1p([len(p) for p in stripped]), data.weak, data.strong)
    print("| variant | APGR (partitions) | CPT(50%) | CPT(80%) | options removed (partitions) |")
    print("|---|---|---|---|---|")
    print(f"| prompt length (no training) | {length.apgr:.3f} | {length.cpt50:.1%} | {length.cpt80:.1%} "
          f"| {length_proxy.apgr:.3f} |", flush=True)
    for row in ROWS:
        apgr, proxy, metrics = evaluate(row, data, views, args.repeats)
        print(f"| {row.name} | {_spread(apgr)} | {np.mean([m.cpt50 for m in metrics]):.1%} "
              f"| {np.mean([m.cpt80 for m in metrics]):.1%} | {_spread(proxy)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
