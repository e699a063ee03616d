"""`turnout router ...`: score, train, evaluate and calibrate routers from the command line.

gateway/cli.py mounts these with `register(subparsers)`; every handler returns an exit code.
Training and evaluation imports (torch, matplotlib) happen inside the handlers, so mounting the
command group costs nothing at gateway start.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np

from engine.messages import user_turns

from . import ROUTER_NAMES, load_router
from .conversation import TurnsMode, score_conversations


class InputError(ValueError):
    """A problem with a user-supplied file, reported as one line with its location."""


def register(subparsers: argparse._SubParsersAction) -> None:
    router = subparsers.add_parser("router", help="score, train, evaluate and calibrate prompt routers")
    commands = router.add_subparsers(dest="router_command", required=True, metavar="ACTION")

    score = commands.add_parser("score", help="add a router score to each prompt of a JSONL file")
    score.add_argument("--input", required=True, metavar="FILE",
                       help='JSONL, one {"prompt": ...} or chat {"messages": [...]} per line')
    score.add_argument("--output", required=True, metavar="FILE", help="the same objects plus \"score\"")
    _add_router_argument(score)
    _add_turns_argument(score)
    score.add_argument("--batch-size", type=int, default=64)
    score.set_defaults(func=score_command)

    train = commands.add_parser("train", help="train a head on outcome data; reports subject-held-out CV")
    _add_data_arguments(train)
    train.add_argument("--out", required=True, metavar="FILE", help="weights file to write (.npz)")
    train.add_argument("--inputs", default=None,
                       help="embedding | embedding+length | embedding+features | features")
    train.add_argument("--label", default=None, help="gain2 | gain_soft | strong_only | weak_wrong")
    train.add_argument("--hidden", type=int, default=None, help="MLP hidden units (0 = logistic)")
    train.add_argument("--l2", type=float, default=None)
    train.add_argument("--exclude-groups", default="", metavar="A,B",
                       help="groups (subjects) never learned from, e.g. ones with broken labels")
    train.add_argument("--folds", type=int, default=5, help="group-held-out CV folds (0 skips CV)")
    train.add_argument("--encoder", default=None, metavar="NAME",
                       help="embedding the head is trained on and serves with: all-MiniLM-L6-v2-seq256 "
                            "(default; shared with the semantic cache) or all-MiniLM-L6-v2-static-input, ...")
    train.set_defaults(func=train_command)

    evaluate = commands.add_parser("eval", help="APGR / CPT of a router beside the random and length routers")
    _add_data_arguments(evaluate)
    _add_router_argument(evaluate)
    evaluate.add_argument("--plot", metavar="PNG", help="write the PGR-vs-cost curves here")
    evaluate.set_defaults(func=eval_command)

    calibrate = commands.add_parser("calibrate", help="score threshold for a large-model fraction")
    calibrate.add_argument("--strong-fraction", type=float, required=True, metavar="F")
    calibrate.add_argument("--prompts", required=True, metavar="FILE",
                           help='JSONL sample of {"prompt": ...} or {"messages": [...]} (e.g. logged requests)')
    _add_router_argument(calibrate)
    _add_turns_argument(calibrate)
    calibrate.set_defaults(func=calibrate_command)


def _add_router_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router", default="default", metavar="NAME|FILE",
                        help=f"{' | '.join(ROUTER_NAMES)} or a weights file (default: default)")


def _add_turns_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--turns", choices=get_args(TurnsMode), default="conversation",
                        help="how a {\"messages\"} line is scored, as routing.turns in turnout.yaml: its hardest "
                             "user turn (default) or its last one")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="outcome CSV/JSONL, or a folder of them (RouteLLM MMLU layout)")
    parser.add_argument("--weak-column", help="column with the small model's quality (auto-detected)")
    parser.add_argument("--strong-column", help="column with the large model's quality (auto-detected)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="where prompt embeddings are cached between runs (default: $TURNOUT_HOME, else "
                             "~/.cache/turnout)")


# --- handlers ------------------------------------------------------------------------------------

def score_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    return _reporting_errors(lambda: _score(args, tqdm))


def _score(args: argparse.Namespace, tqdm: Any) -> int:
    records = read_prompt_records(args.input)
    router = load_router(args.router)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as out, tqdm(total=len(records), unit="prompt", desc="scoring",
                                                         file=sys.stderr) as bar:
        for start in range(0, len(records), args.batch_size):
            batch = records[start : start + args.batch_size]
            scores = score_conversations(router, [record_turns(r) for r in batch], args.turns)
            for record, score in zip(batch, scores, strict=True):
                out.write(json.dumps({**record, "score": float(score)}, ensure_ascii=False) + "\n")
            bar.update(len(batch))
    print(f"scored {len(records)} prompts with {router.name} -> {output}", file=sys.stderr)
    return 0


def train_command(args: argparse.Namespace) -> int:
    return _reporting_errors(lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from .baselines import PromptLengthRouter, RandomRouter
    from .evaluate import routing_metrics
    from .train import DEFAULT_SPEC, HeadSpec, cross_validate, fit_head

    data = _load_data(args)
    overrides = {k: v for k, v in (("inputs", args.inputs), ("label", args.label), ("hidden", args.hidden),
                                   ("l2", args.l2)) if v is not None}
    spec = HeadSpec(**{**DEFAULT_SPEC.__dict__, **overrides})
    excluded = [g for g in args.exclude_groups.split(",") if g]
    unknown = set(excluded) - set(data.groups)
    if unknown:
        raise InputError(f"--exclude-groups: no such group(s) {sorted(unknown)}")
    from .encoders import SHARED_ENCODER_NAME

    encoder = args.encoder or SHARED_ENCODER_NAME
    embeddings = _embeddings(data.prompts, args.cache_dir, encoder) if spec.inputs.startswith("embedding") else None
    print(f"{len(data)} prompts in {len(set(data.groups))} groups; weak={data.weak_column} "
          f"({data.weak.mean():.3f}), strong={data.strong_column} ({data.strong.mean():.3f})")
    print(f"head: {spec.description} on {encoder}" + (f"; not learning from {excluded}" if excluded else ""))
    meta: dict[str, Any] = {"encoder": encoder, "trained_on": str(args.data),
                            "training_data_digest": data_digest(data.prompts), "excluded_groups": excluded,
                            "weak_column": data.weak_column, "strong_column": data.strong_column,
                            "n_prompts": len(data)}
    if args.folds:
        result = cross_validate(spec, data, embeddings, n_splits=args.folds, exclude_from_training=excluded)
        rows = {"random": routing_metrics(RandomRouter().score(data.prompts), data.weak, data.strong),
                "length": routing_metrics(PromptLengthRouter().score(data.prompts), data.weak, data.strong),
                "this head (group-held-out CV)": result.metrics}
        print(f"\n{args.folds}-fold cross-validation holding out whole groups:")
        _print_metrics(rows)
        meta["cv"] = {"folds": args.folds, **result.metrics.as_dict()}
    keep = ~np.isin(data.groups, excluded)
    train = data.subset(np.flatnonzero(keep))
    head = fit_head(spec, train.prompts, None if embeddings is None else embeddings[keep], train.weak,
                    train.strong, meta)
    head = head.with_calibration(data.prompts, embeddings)
    print(f"\nwrote {head.save(args.out)}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    return _reporting_errors(lambda: _eval(args))


def _eval(args: argparse.Namespace) -> int:
    from .baselines import PromptLengthRouter, RandomRouter
    from .evaluate import plot_pgr_curves, routing_metrics

    data = _load_data(args)
    router = load_router(args.router)
    embeddings = _embeddings(data.prompts, args.cache_dir) if router.needs_embeddings else None
    scores = {router.name: router.score(data.prompts, embeddings)}
    for baseline in (RandomRouter(), PromptLengthRouter()):
        scores[baseline.name] = baseline.score(data.prompts)
    head = getattr(router, "head", None)
    if head is not None and head.meta.get("training_data_digest") == data_digest(data.prompts):
        print(f"note: {router.name} was trained on this data, so these are in-sample numbers; "
              "`turnout router train` reports group-held-out CV")
    print(f"{len(data)} prompts; weak {data.weak.mean():.3f}, strong {data.strong.mean():.3f}")
    _print_metrics({name: routing_metrics(s, data.weak, data.strong) for name, s in scores.items()})
    if args.plot:
        print(f"wrote {plot_pgr_curves(scores, data.weak, data.strong, args.plot)}")
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    return _reporting_errors(lambda: _calibrate(args))


def _calibrate(args: argparse.Namespace) -> int:
    from .calibrate import threshold_for_strong_fraction

    conversations = [record_turns(r) for r in read_prompt_records(args.prompts)]
    router = load_router(args.router)
    calibration = threshold_for_strong_fraction(score_conversations(router, conversations, args.turns),
                                                args.strong_fraction)
    print(json.dumps({"router": router.name, **calibration.as_dict()}))
    return 0


# --- helpers -------------------------------------------------------------------------------------

def read_prompt_records(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSONL of objects with a string "prompt" or a chat's "messages" (OpenAI's shape, with a user
    turn); blank lines are skipped, anything else is an error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not (isinstance(record.get("prompt"), str) or _chat(record)):
                raise InputError(f'{path}:{line_no}: expected an object with a string "prompt" or a "messages" '
                                 'list with a user turn')
            records.append(record)
    if not records:
        raise InputError(f"{path}: no prompts (the file is empty)")
    return records


def _chat(record: dict[str, Any]) -> bool:
    messages = record.get("messages")
    return (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
            and any(m.get("role") == "user" for m in messages))


def record_turns(record: dict[str, Any]) -> list[str]:
    """A record's user turns: its prompt, or its chat's user messages."""
    return [record["prompt"]] if isinstance(record.get("prompt"), str) else user_turns(record["messages"])


def data_digest(prompts: Sequence[str]) -> str:
    """Order-independent fingerprint of a prompt set, to tell in-sample evaluation apart."""
    return hashlib.sha1(b"".join(sorted(hashlib.sha1(p.encode()).digest() for p in prompts))).hexdigest()


def _load_data(args: argparse.Namespace):
    from .data import load_outcomes

    if not Path(args.data).exists():
        raise InputError(f"{args.data}: no such file or folder")
    return load_outcomes(args.data, weak_column=args.weak_column, strong_column=args.strong_column)


def _embeddings(prompts: Sequence[str], cache_dir: str | None, encoder: str | None = None) -> np.ndarray:
    from .embedding_cache import cached_embed
    from .encoders import SHARED_ENCODER_NAME, encoder_named

    return cached_embed(encoder_named(encoder or SHARED_ENCODER_NAME), prompts, cache_dir, show_progress=True)


def _print_metrics(rows: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("router", "APGR", "CPT(50%)", "CPT(80%)")
    for name, m in rows.items():
        table.add_row(name, f"{m.apgr:.3f}", f"{m.cpt50:.1%}", f"{m.cpt80:.1%}")
    Console().print(table)


def _reporting_errors(run) -> int:
    try:
        return run()
    except (InputError, ValueError) as exc:
        print(f"turnout router: {exc}", file=sys.stderr)
        return 2
