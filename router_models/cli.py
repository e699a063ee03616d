"""`turnout router ...`: score, train, evaluate and calibrate routers from the command line.

`eval` takes several outcome sets at once and prints every router on every set (router_models/
transfer.py), since a router is only worth shipping if it beats the baselines beyond its training data.
`from-alpacaeval` converts AlpacaEval judgements (CC BY-NC 4.0) into validation-only outcome rows,
which `train` refuses unless told `--allow-validation-data`.

gateway/cli.py mounts these with `register(subparsers)`; every handler returns an exit code. `train` and
`eval` read outcome files; a `--data SCHEME://...` URL is read by a reader given to
`accept_outcome_urls` (the gateway gives one for redis://, its shadow-labelling sink).
Training and evaluation imports (torch, matplotlib) happen inside the handlers, so mounting the
command group costs nothing at gateway start.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import numpy as np

from engine.messages import user_turns

from . import ROUTER_NAMES, WEIGHTS_DIR, load_router
from .conversation import TurnsMode, score_conversations
from .data import OutcomeRecords, shown_url
from .jsonl import json_lines
from .transfer import data_digest

OutcomeReader = Callable[[str], OutcomeRecords]
"""Reads the outcome rows a `--data` URL names; a ValueError says what is wrong with it."""


class InputError(ValueError):
    """A problem with a user-supplied file, reported as one line with its location."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    train.add_argument("--allow-validation-data", action="store_true",
                       help='learn from rows marked "use": "validation" (e.g. AlpacaEval, CC BY-NC 4.0); for '
                            "local experiments only, never for a head that ships")
    train.set_defaults(func=train_command, outcome_readers={})

    evaluate = commands.add_parser("eval", help="APGR / CPT of routers on one or more outcome sets, beside the "
                                                "random and length routers")
    _add_data_arguments(evaluate, multiple=True)
    evaluate.add_argument("--router", action="append", default=None, metavar="NAME|FILE",
                          help=f"{' | '.join(ROUTER_NAMES)} or a weights file; repeat for several "
                               "(default: every shipped head in router_models/weights)")
    evaluate.add_argument("--json", action="store_true", help="print the table as JSON instead")
    evaluate.add_argument("--plot", metavar="PNG", help="write the PGR-vs-cost curves here (one --data only)")
    evaluate.set_defaults(func=eval_command, outcome_readers={})

    alpaca = commands.add_parser("from-alpacaeval",
                                 help="AlpacaEval judgements -> outcome JSONL (CC BY-NC 4.0: validation only)")
    alpaca.add_argument("folder", metavar="DIR", help="folder with the AlpacaEval outcome files (see PROVENANCE.md)")
    alpaca.add_argument("--judge", type=int, choices=(1, 2), required=True,
                        help="1: gpt4_turbo_fn, 2: cot_gpt4_turbo_fn (reasons before judging)")
    alpaca.add_argument("--out", required=True, metavar="FILE", help="outcome JSONL to write")
    alpaca.set_defaults(func=from_alpacaeval_command)

    calibrate = commands.add_parser("calibrate", help="score threshold for a large-model fraction")
    calibrate.add_argument("--strong-fraction", type=float, required=True, metavar="F")
    calibrate.add_argument("--prompts", required=True, metavar="FILE",
                           help='JSONL sample of {"prompt": ...} or {"messages": [...]} (e.g. logged requests)')
    _add_router_argument(calibrate)
    _add_turns_argument(calibrate)
    calibrate.set_defaults(func=calibrate_command)


def accept_outcome_urls(router_actions: argparse._SubParsersAction[argparse.ArgumentParser],
                        readers: Mapping[str, OutcomeReader]) -> None:
    """Let `train` and `eval` read `--data SCHEME://...` with `readers[SCHEME]` (`router_actions`: the
    `router` group's subcommands)."""
    for command in ("train", "eval"):
        parser = router_actions.choices[command]
        parser.set_defaults(outcome_readers={**parser.get_default("outcome_readers"), **readers})


def _add_router_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router", default="default", metavar="NAME|FILE",
                        help=f"{' | '.join(ROUTER_NAMES)} or a weights file (default: default)")


def _add_turns_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--turns", choices=get_args(TurnsMode), default="conversation",
                        help="how a {\"messages\"} line is scored, as routing.turns in turnout.yaml: its hardest "
                             "user turn (default) or its last one")


_DATA_HELP = ("outcome CSV/JSONL, a folder of them (RouteLLM MMLU layout), or the gateway's redis shadow sink: "
              "redis://HOST:PORT[/DB]?tenant=T")


def _add_data_arguments(parser: argparse.ArgumentParser, multiple: bool = False) -> None:
    if multiple:
        parser.add_argument("--data", required=True, action="append", metavar="[NAME=]PATH|URL",
                            help=f"{_DATA_HELP}; repeat for several sets, each one column of the table (NAME "
                                 "defaults to the file's stem, or the URL's tenant)")
    else:
        parser.add_argument("--data", required=True, metavar="PATH|URL", help=_DATA_HELP)
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

    source = shown_url(args.data)
    data = _load_set(args.data, args)[1]
    if data.validation_only and not args.allow_validation_data:
        raise InputError(f"{source}: rows are marked \"use\": \"validation\" (license "
                         f"{', '.join(data.licenses) or 'unknown'}): evaluate with them, do not train; "
                         "--allow-validation-data overrides, for local experiments only")
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
    groups = len(set(data.groups))
    print(f"{len(data)} prompts in {groups} groups; weak={data.weak_column} "
          f"({data.weak.mean():.3f}), strong={data.strong_column} ({data.strong.mean():.3f})")
    print(f"head: {spec.description} on {encoder}" + (f"; not learning from {excluded}" if excluded else ""))
    meta: dict[str, Any] = {"encoder": encoder, "trained_on": source,
                            "trained_on_validation_data": data.validation_only,
                            "training_data_digest": data_digest(data.prompts), "excluded_groups": excluded,
                            "weak_column": data.weak_column, "strong_column": data.strong_column,
                            "n_prompts": len(data)}
    if args.folds:
        held_out, row = "whole groups", "this head (group-held-out CV)"
        cv_data = data
        if groups < args.folds:  # e.g. one tenant's shadow stream: every row in one group
            held_out = f"prompts (only {groups} groups, fewer than the folds)"
            row = "this head (prompt-held-out CV)"
            cv_data = replace(data, groups=np.arange(len(data)).astype(str))
        result = cross_validate(spec, cv_data, embeddings, n_splits=args.folds, exclude_from_training=excluded)
        rows = {"random": routing_metrics(RandomRouter().score(data.prompts), data.weak, data.strong),
                "length": routing_metrics(PromptLengthRouter().score(data.prompts), data.weak, data.strong),
                row: result.metrics}
        print(f"\n{args.folds}-fold cross-validation holding out {held_out}:")
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
    from .transfer import evaluate_cell, selection, shipped_router_names

    if args.plot and len(args.data) > 1:
        raise InputError("--plot draws one set's curves: give a single --data with it")
    sets = _named_sets(args)
    routers: dict[str, Any] = {name: _eval_router(name, args.cache_dir)
                               for name in args.router or shipped_router_names(WEIGHTS_DIR)}
    routers.update({"random": RandomRouter(), "length": PromptLengthRouter()})

    def embed(prompts: Sequence[str], encoder: str | None) -> np.ndarray:
        return _embeddings(prompts, args.cache_dir, encoder)

    def cell(router: Any, set_name: str) -> Any:
        try:
            return evaluate_cell(router, sets[set_name], embed)
        except ValueError as exc:
            raise InputError(f"{set_name}: {exc}") from None

    table = {name: {s: cell(router, s) for s in sets} for name, router in routers.items()}
    ranking = selection(table)
    if args.json:
        print(json.dumps({
            "sets": {s: {"path": shown_url(path), "prompts": len(d), "weak": float(d.weak.mean()),
                         "strong": float(d.strong.mean()), "licenses": list(d.licenses)}
                     for (s, d), path in zip(sets.items(), _set_paths(args), strict=True)},
            "routers": {r: {s: c.as_dict() for s, c in row.items()} for r, row in table.items()},
            "selection": [{"router": sel.router, "margins": sel.margins, "worst_margin": sel.worst_margin,
                           "passes": sel.passes} for sel in ranking]}, indent=2))
    else:
        for s, d in sets.items():
            print(f"{s}: {len(d)} prompts; weak {d.weak.mean():.3f}, strong {d.strong.mean():.3f}")
        _print_table(table, ranking)
    if args.plot:
        from .evaluate import plot_pgr_curves

        (data,) = sets.values()
        scores = {name: r.score(data.prompts, embed(data.prompts, None) if r.needs_embeddings else None)
                  for name, r in routers.items()}
        print(f"wrote {plot_pgr_curves(scores, data.weak, data.strong, args.plot)}", file=sys.stderr)
    return 0


def _eval_router(name: str, cache_dir: str | None) -> Any:
    """`load_router(name)`; the surprisal router also keeps its per-prompt values in the embedding cache."""
    if name == "surprisal":
        from .derived import cache_root
        from .surprisal import SurprisalRouter

        return SurprisalRouter(cache_dir=cache_root(cache_dir))
    return load_router(name)


def _set_paths(args: argparse.Namespace) -> list[str]:
    return [spec.split("=", 1)[1] if _has_name(spec) else spec for spec in args.data]


def _has_name(spec: str) -> bool:
    name, sep, _ = spec.partition("=")
    return bool(sep) and bool(name) and not _url_scheme(name) and not Path(spec).exists()


def _named_sets(args: argparse.Namespace) -> dict[str, Any]:
    sets: dict[str, Any] = {}
    for spec, path in zip(args.data, _set_paths(args), strict=True):
        default_name, data = _load_set(path, args)
        name = spec.split("=", 1)[0] if _has_name(spec) else default_name
        if name in sets:
            name = shown_url(path)
        if name in sets:
            raise InputError(f"--data {name} is given twice")
        sets[name] = data
    return sets


def from_alpacaeval_command(args: argparse.Namespace) -> int:
    from .alpacaeval import LICENSE, convert

    def run() -> int:
        n = convert(args.folder, args.judge, args.out)
        print(f"wrote {n} outcome rows (judge {args.judge}) -> {args.out}; license {LICENSE}: "
              "validation only, `turnout router train` refuses them", file=sys.stderr)
        return 0

    return _reporting_errors(run)


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
    for line_no, record in json_lines(path):
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


def _load_set(path: str, args: argparse.Namespace) -> tuple[str, Any]:
    """One --data set and its default name: a file or folder's stem, or what the URL's reader calls it."""
    from .data import load_outcomes, outcomes_from_records

    scheme = _url_scheme(path)
    if scheme is not None:
        readers: Mapping[str, OutcomeReader] = args.outcome_readers
        if scheme not in readers:
            raise InputError(f"{shown_url(path)}: cannot read {scheme}:// outcome data (this build reads "
                             f"{', '.join(f'{known}://' for known in readers) or 'files only'})")
        records = readers[scheme](path)
        return records.name, outcomes_from_records(records, weak_column=args.weak_column,
                                                   strong_column=args.strong_column)
    if not Path(path).exists():
        raise InputError(f"{path}: no such file or folder")
    return Path(path).stem, load_outcomes(path, weak_column=args.weak_column, strong_column=args.strong_column)


def _url_scheme(spec: str) -> str | None:
    match = re.match(r"([a-z][a-z0-9+.-]*)://", spec)
    return match.group(1) if match else None


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


def _print_table(table: dict[str, dict[str, Any]], ranking: Sequence[Any]) -> None:
    """One row per router, one column per set: APGR and CPT(50%); † marks group-held-out CV, * in-sample."""
    from rich.console import Console
    from rich.table import Table

    sets = list(next(iter(table.values())))
    verdict = {sel.router: f"{'yes' if sel.passes else 'no'} ({sel.worst_margin:+.3f})" for sel in ranking}
    out = Table("router", *(f"{s}\nAPGR · CPT50" for s in sets), "beats random & length\non every set")
    for name, row in table.items():
        cells = [f"{c.metrics.apgr:.3f}{_MARKS[c.basis]} · {c.metrics.cpt50:.1%}" for c in row.values()]
        out.add_row(name, *cells, verdict.get(name, "–"))
    Console(width=max(100, 24 * (len(sets) + 2))).print(out)
    bases = {c.basis for row in table.values() for c in row.values()}
    if "cv" in bases:
        print("† trained on this set: group-held-out cross-validation with the head's own recipe")
    if "in-sample" in bases:
        print("* trained on this set, which has one group only: in-sample, optimistic")


_MARKS = {"scored": "", "cv": "†", "in-sample": "*"}


def _reporting_errors(run: Callable[[], int]) -> int:
    try:
        return run()
    except (InputError, ValueError) as exc:
        print(f"turnout router: {exc}", file=sys.stderr)
        return 2
