"""`turnout router label`: outcome data for `turnout router train` from your own prompts and tiers.

Each prompt is answered by both tiers of a turnout.yaml, through the same backends, balancer and
per-tier failover the gateway serves with (so the tiers may be embedded engines, vLLM or any
OpenAI-compatible server), and the pair is scored by a checker (gateway/outcome_checks.py) or a pairwise
judge (gateway/pairwise_judge.py). Each finished prompt is appended to --out at once as
`{..the row, prompt, weak_quality, strong_quality, weak_answer, strong_answer, ...}`, so a crash loses
nothing and a rerun skips what is there. Unlike the gateway it never falls back to the other tier: a
label must come from the tier it names.

This module lives in gateway/ (router_models must not import the gateway); it adds `label` to the
`router` command group that router_models.cli registers, and imports backends only when run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import TIERS, ConfigError, TurnoutConfig
from gateway.route import Route
from gateway.types import content_text

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
    from gateway.answers import Answer
    from gateway.backends.base import Backend
    from gateway.balancer import Balancer
    from gateway.failover import Failover
    from gateway.outcome_checks import Checker
    from gateway.pairwise_judge import PairwiseJudge

DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_TOKENS = 512
JUDGE_MAX_TOKENS = 4  # "A", "B" or "tie"
WEAK, STRONG = Route("small", "label", may_fall_back=False), Route("large", "label", may_fall_back=False)


class LabelError(ValueError):
    """A problem reported as one line, exit status 2: a bad input, or a tier or judge that does not answer."""


def register(commands: Commands) -> None:
    label = router_actions(commands).add_parser(
        "label", help="answer prompts with both tiers and score the pairs: outcome data for `router train`")
    label.add_argument("--prompts", required=True, metavar="FILE",
                       help='JSONL of {"prompt": ...} or {"messages": [...]} (a logged chat), with "answer" or '
                            '"test" for a checker')
    label.add_argument("--out", required=True, metavar="FILE",
                       help="outcomes JSONL, appended to; prompts already in it are skipped (resumes a run)")
    label.add_argument("--config", metavar="FILE", help="turnout.yaml naming the tiers (default: $TURNOUT_CONFIG, "
                                                         "else the built-in config)")
    score = label.add_mutually_exclusive_group()
    score.add_argument("--checker", metavar="NAME", help="exact | regex (against each row's \"answer\") | "
                                                          "humaneval (runs each row's \"test\")")
    score.add_argument("--judge", metavar="TIER|MODEL",
                       help="pairwise judge when there is no checker: a tier or a configured model id (default: large)")
    label.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                       help="prompts in flight at once (default: %(default)s)")
    label.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="per answer (default: %(default)s)")
    label.add_argument("--temperature", type=float, default=0.0, help="of the answers (default: greedy)")
    label.add_argument("--timeout-s", type=float, default=None,
                       help="per request, before the run stops (default: the config's server.request_timeout_s)")
    label.set_defaults(func=label_command)


def router_actions(commands: Commands) -> Commands:
    """The subcommands of `router` (router_models.cli makes the group; argparse offers no public way back in)."""
    router = commands.choices.get("router") or commands.add_parser("router", help="prompt routers")
    found = [a for a in router._actions if isinstance(a, argparse._SubParsersAction)]
    return found[0] if found else router.add_subparsers(dest="router_command", required=True, metavar="ACTION")


def label_command(args: argparse.Namespace) -> int:
    from gateway.serve import load_configured

    try:
        if args.concurrency < 1:
            raise LabelError("--concurrency must be at least 1")
        config = load_configured(args.config)
        rows = read_rows(args.prompts)
        checker = _checker(args.checker, rows, args.prompts)
        out = OutcomeFile(Path(args.out))
        todo = _unique([row for row in rows if row_key(row) not in out.keys])
        skipped = f" ({len(rows) - len(todo)} in {out.path} already, or repeated)" if len(todo) < len(rows) else ""
        print(f"{len(rows)} prompts; labelling {len(todo)}{skipped}", file=sys.stderr)
        if not todo:
            return 0
        params = {"max_tokens": args.max_tokens, "temperature": args.temperature}
        written = asyncio.run(_label(config, todo, out, checker, args.judge, params,
                                     args.timeout_s or config.server.request_timeout_s, args.concurrency))
    except (ValueError, ConfigError) as exc:  # LabelError, and a config the balancer refuses
        print(f"turnout router label: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(f"wrote {written} outcomes -> {out.path}", file=sys.stderr)
    return 0


async def _label(config: TurnoutConfig, rows: list[dict[str, Any]], out: OutcomeFile, checker: Checker | None,
                 judge_spec: str | None, params: dict[str, Any], timeout_s: float, concurrency: int) -> int:
    from tqdm import tqdm

    from gateway.pairwise_judge import PairwiseJudge

    judge_name = judge_spec or "large"
    judge_route = None if checker is not None else judge_target(config, judge_name)
    tiers = Tiers.build(config, timeout_s)
    try:
        await tiers.start([WEAK, STRONG] + ([judge_route] if judge_route else []))
        judge = None
        if judge_route is not None:
            judge_params = {"max_tokens": JUDGE_MAX_TOKENS, "temperature": 0.0}

            async def ask(messages: list[dict[str, Any]]) -> str:
                return (await tiers.answer(judge_route, messages, judge_params)).text

            judge = PairwiseJudge(ask)
        labeler = Labeler(tiers, params, checker=checker, judge=judge, judge_name=judge_name)
        with tqdm(total=len(rows), unit="prompt", desc="labelling", file=sys.stderr) as bar:
            return await labeler.run(rows, out, concurrency, bar.update)
    finally:
        await tiers.close()


# --- prompts in, outcomes out ---------------------------------------------------------------------

def read_rows(path: str) -> list[dict[str, Any]]:
    """The prompts file, parsed and checked as `turnout router score` does."""
    from router_models.cli import read_prompt_records

    try:
        return read_prompt_records(path)
    except ValueError as exc:
        raise LabelError(str(exc)) from None


def row_key(row: dict[str, Any]) -> str:
    """What identifies a prompt across runs: its chat when it has one, else its prompt."""
    asked = row["messages"] if "messages" in row else row["prompt"]
    return hashlib.sha1(json.dumps(asked, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def row_messages(row: dict[str, Any], checker: Checker | None) -> list[dict[str, Any]]:
    """The chat both tiers answer: a logged chat up to its last user turn (its logged answer dropped), or the
    prompt as one user turn (as the checker asks for it)."""
    if "messages" in row:
        messages = list(row["messages"])
        while messages[-1].get("role") != "user":
            messages.pop()
        return messages
    prompt = row["prompt"] if checker is None else checker.prompt_for(row["prompt"])
    return [{"role": "user", "content": prompt}]


def row_prompt(row: dict[str, Any]) -> str:
    """The `prompt` the router learns from: the prompt, or a chat's last user turn."""
    if "messages" not in row:
        return str(row["prompt"])
    return next(content_text(m.get("content")) for m in reversed(row["messages"]) if m.get("role") == "user")


def _request_text(messages: Sequence[dict[str, Any]]) -> str:
    """A chat as the judge reads it."""
    if len(messages) == 1:
        return content_text(messages[0].get("content"))
    return "\n\n".join(f"{m.get('role')}: {content_text(m.get('content'))}" for m in messages)


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prompt that appears twice is labelled once."""
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row_key(row), row)
    return list(first.values())


def _checker(name: str | None, rows: list[dict[str, Any]], path: str) -> Checker | None:
    from gateway.outcome_checks import checker_named

    if name is None:
        return None
    try:
        checker = checker_named(name)
    except ValueError as exc:
        raise LabelError(str(exc)) from None
    for number, row in enumerate(rows, start=1):
        if (problem := checker.problem(row)) is not None:
            raise LabelError(f"{path}: prompt {number}: {problem}")
    return checker


class OutcomeFile:
    """--out: the keys of the prompts it holds, and one appended, flushed line per new outcome. A last line
    cut short by a crash is dropped, so the rerun labels that prompt again."""

    def __init__(self, path: Path):
        self.path = path
        self.keys: set[str] = set()
        if path.exists():
            self._read()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            self.path.write_bytes(data)
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.keys.add(row_key(row))
            except (ValueError, KeyError, TypeError):
                raise LabelError(f"{self.path}:{number}: not an outcome row; use another --out") from None

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.keys.add(row_key(row))


# --- the tiers --------------------------------------------------------------------------------------

def judge_target(config: TurnoutConfig, spec: str) -> Route:
    """--judge: a tier, or a configured model id (served by that model's deployments alone)."""
    from gateway.answers import judge_route

    try:
        return judge_route(config, spec, "--judge")
    except ValueError as exc:
        raise LabelError(str(exc)) from None


class Tiers:
    """The config's deployments, built and balanced as the gateway builds them (gateway/runtime.py), with
    failover among a tier's replicas but never to the other tier."""

    def __init__(self, backends: list[Backend], balancer: Balancer, failover: Failover, timeout_s: float):
        self.backends = backends
        self.balancer = balancer
        self.failover = failover
        self.timeout_s = timeout_s

    @classmethod
    def build(cls, config: TurnoutConfig, timeout_s: float) -> Tiers:
        from gateway.backends import build_backends, unique_backends
        from gateway.balancer import Balancer
        from gateway.failover import Failover

        missing = [tier for tier in TIERS if tier not in config.tiers]
        if missing:
            raise LabelError(f"labelling needs both tiers; the config has no {' and no '.join(missing)} tier")
        tiers = build_backends(config)
        balancer = Balancer(config, tiers)
        failover = Failover(balancer, config.routing.retry, fallback=False)
        return cls(unique_backends(tiers), balancer, failover, timeout_s)

    async def start(self, routes: Sequence[Route]) -> None:
        """Start every backend (embedded ones load their weights) and probe each deployment once, so a tier or
        judge that is down stops the run now, in seconds, rather than at its first prompt."""
        from gateway.health import HealthMonitor

        for backend in self.backends:
            try:
                await backend.start()
            except Exception as exc:
                raise LabelError(f"backend {backend.name} failed to start: {_one_line(exc)}") from None
        for replica in self.balancer.replicas:
            if replica.monitored:
                await HealthMonitor.check(replica)
            else:
                replica.healthy = True
        for route in routes:
            serving = [r for r in self.balancer.tiers[route.tier] if route.model is None or r.model == route.model]
            if not any(r.healthy for r in serving):
                what = f"model {route.model}" if route.model else f"the {route.tier} tier"
                raise LabelError(f"{what} does not answer ({', '.join(r.backend.name for r in serving)} failed "
                                 "its health check)")

    async def close(self) -> None:
        await asyncio.gather(*(backend.close() for backend in self.backends), return_exceptions=True)

    async def answer(self, route: Route, messages: list[dict[str, Any]], params: dict[str, Any]) -> Answer:
        """The whole reply of `route`'s tier (or model) to `messages`; a failure or timeout stops the run."""
        from gateway.answers import whole_answer
        from gateway.backends.base import BackendError
        from gateway.types import BackendRequest

        request = BackendRequest(kind="chat", model=route.model or route.tier, messages=messages, params=dict(params))
        what = f"model {route.model}" if route.model else f"the {route.tier} tier"
        try:
            async with asyncio.timeout(self.timeout_s):
                return await whole_answer(self.failover, route, request)
        except TimeoutError:
            raise LabelError(f"{what} sent no whole answer within {self.timeout_s:g}s (--timeout-s)") from None
        except BackendError as exc:
            raise LabelError(f"{what} failed: {_one_line(exc)}") from None


# --- labelling -------------------------------------------------------------------------------------

class Labeler:
    """Answers each row with both tiers and scores the pair; at most `concurrency` rows in flight."""

    def __init__(self, tiers: Tiers, params: dict[str, Any], *, checker: Checker | None = None,
                 judge: PairwiseJudge | None = None, judge_name: str = "large"):
        assert (checker is None) != (judge is None), "a checker or a judge, not both"
        self.tiers = tiers
        self.params = params
        self.checker = checker
        self.judge = judge
        self.judge_name = judge_name

    async def run(self, rows: list[dict[str, Any]], out: OutcomeFile, concurrency: int, progress: Any) -> int:
        """Label `rows`, appending each outcome as it is done; returns how many were written. The first failure
        cancels what is in flight and is raised: what was written stays, and a rerun resumes after it."""
        gate = asyncio.Semaphore(concurrency)
        written = 0

        async def one(row: dict[str, Any]) -> None:
            nonlocal written
            async with gate:
                outcome = await self.label(row)
            out.append(outcome)
            written += 1
            progress(1)

        try:
            async with asyncio.TaskGroup() as group:
                for row in rows:
                    group.create_task(one(row))
        except BaseExceptionGroup as failed:
            first = failed.exceptions[0]
            if isinstance(first, LabelError):
                raise LabelError(f"{first} ({written} outcomes written to {out.path}; rerun to go on)") from None
            raise first from None
        return written

    async def label(self, row: dict[str, Any]) -> dict[str, Any]:
        messages = row_messages(row, self.checker)
        weak, strong = await asyncio.gather(self.tiers.answer(WEAK, messages, self.params),
                                            self.tiers.answer(STRONG, messages, self.params))
        scored: dict[str, Any]
        if self.checker is not None:
            weak_quality, strong_quality = await asyncio.gather(
                asyncio.to_thread(self.checker.score, row, weak.text),
                asyncio.to_thread(self.checker.score, row, strong.text))
            scored = {"weak_quality": weak_quality, "strong_quality": strong_quality, "scored_by": self.checker.name}
        else:
            assert self.judge is not None
            comparison = await self.judge.compare(_request_text(messages), weak.text, strong.text)
            scored = {"weak_quality": comparison.weak_quality, "strong_quality": comparison.strong_quality,
                      "scored_by": f"judge:{self.judge_name}", "judge_verdicts": list(comparison.verdicts)}
        return {**row, "prompt": row_prompt(row), **scored, "weak_answer": weak.text, "strong_answer": strong.text,
                "weak_model": weak.model, "strong_model": strong.model, "weak_confidence": weak.confidence,
                "strong_confidence": strong.confidence}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
