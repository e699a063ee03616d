"""`turnout drafters eval`: measure a drafter against a target on your prompts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_prompts(path: Path) -> list[str]:
    """JSONL lines with a "prompt" field, or plain text with one prompt per line."""
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                prompts.append(json.loads(line)["prompt"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SystemExit(f"{path}:{number}: expected a JSON object with a \"prompt\" field ({exc})") from exc
        else:
            prompts.append(line)
    if not prompts:
        raise SystemExit(f"{path}: no prompts")
    return prompts


def eval_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from drafters.evaluate import evaluate
    from engine.loader import load_model
    from engine.speculative import Method, SpeculativeConfig
    from engine.store import resolve

    method: Method = args.method or ("draft_model" if args.draft else "ngram")
    config = SpeculativeConfig(method=method, draft_model=args.draft, num_speculative_tokens=args.k)
    target = load_model(args.target, resolve(args.target), pack=True)
    report = evaluate(target, config, read_prompts(Path(args.prompts)), max_tokens=args.max_tokens)
    console = Console()
    console.print(f"[bold]{method}[/] drafting for {args.target}, k={report.k}, {report.prompts} prompts, "
                  f"{report.generated_tokens} tokens")
    console.print(f"acceptance rate α = {report.acceptance_rate:.3f}; mean accepted per draft = "
                  f"{report.mean_accepted_length:.2f}; draft step = {report.draft_cost:.3f} target steps")
    drafts = report.stats.num_drafts or 1
    console.print("accepted by position: " + ", ".join(
        f"{i + 1}:{count / drafts:.2f}" for i, count in enumerate(report.stats.accepted_per_position)))
    table = Table("k", "verify cost (target steps)", "predicted speedup")
    for k, speedup in report.predicted.items():
        table.add_row(str(k), f"{report.verify_cost[k]:.2f}", f"{speedup:.2f}×")
    console.print(table)
    console.print(f"recommended k = {report.recommended_k}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drafters = subparsers.add_parser("drafters", help="speculative-decoding drafters")
    commands = drafters.add_subparsers(dest="drafters_command", required=True)
    evaluate = commands.add_parser("eval", help="acceptance, costs, predicted speedup and recommended k")
    evaluate.add_argument("--target", required=True, help="target model (built-in name, path or hub id)")
    evaluate.add_argument("--draft", help="draft model (omit for n-gram drafting)")
    evaluate.add_argument("--method", choices=["ngram", "draft_model", "ngram+draft_model"])
    evaluate.add_argument("--prompts", required=True, help="JSONL with a prompt field, or one prompt per line")
    evaluate.add_argument("--k", type=int, default=4, help="draft tokens per step")
    evaluate.add_argument("--max-tokens", type=int, default=64)
    evaluate.set_defaults(func=eval_command)
