"""`turnout drafters eval`: will a drafter pay off for this target on these prompts, and at which k?

Acceptance is measured by running the real engine with speculation at a fixed k; costs are measured
as forward-pass times on this machine. The prediction uses Leviathan et al.'s expected tokens per
step with the measured per-position acceptance rate α:  E[tokens] = (1 − α^(k+1)) / (1 − α),
speedup(k) = E[tokens] / (k · c_draft + c_verify(k)), costs relative to one target decode step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from drafters.build import build_drafter
from drafters.costs import step_time
from engine.adaptive import expected_tokens
from engine.engine import Engine
from engine.loader import LoadedModel
from engine.speculative import SpeculativeConfig
from engine.types import SamplingParams, SpecStats


@dataclass
class DrafterReport:
    k: int
    prompts: int
    generated_tokens: int
    stats: SpecStats
    draft_cost: float  # one draft step, in target decode steps
    verify_cost: dict[int, float]  # forward over n tokens, in target decode steps
    predicted: dict[int, float]  # predicted speedup per k

    @property
    def acceptance_rate(self) -> float:
        return acceptance_rate(self.stats)

    @property
    def mean_accepted_length(self) -> float:
        return self.stats.num_accepted_tokens / max(1, self.stats.num_drafts)

    @property
    def recommended_k(self) -> int:
        return max(self.predicted, key=self.predicted.__getitem__)


def acceptance_rate(stats: SpecStats) -> float:
    """Per-token acceptance α: accepted / positions actually tried (a position after a rejection is not)."""
    tried = stats.num_drafts + sum(stats.accepted_per_position[:-1])
    return stats.num_accepted_tokens / max(1, tried)


def predicted_speedup(alpha: float, k: int, draft_cost: float, verify_cost: float) -> float:
    return expected_tokens(alpha, k) / (k * draft_cost + verify_cost)


def evaluate(target: LoadedModel, config: SpeculativeConfig, prompts: list[str], *,
             max_tokens: int = 64, ks: range = range(1, 17)) -> DrafterReport:
    fixed = SpeculativeConfig(**{**config.__dict__, "max_speculative_tokens": config.num_speculative_tokens})
    engine = Engine(target, max_batch_size=1, speculative=fixed, drafters=build_drafter, progress=False)
    total, generated = SpecStats(), 0
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    async def run_all() -> None:
        nonlocal generated
        for prompt in prompts:
            ids = engine.encode_chat([{"role": "user", "content": prompt}])
            async for delta in engine.generate(ids, params):
                generated += len(delta.token_ids)
                if delta.spec:
                    _add(total, delta.spec)

    try:
        asyncio.run(run_all())
        base = step_time(target.model, 1)
        verify = {k: step_time(target.model, k + 1) / base for k in ks}
        drafter = engine.scheduler.drafter
        draft_model = getattr(drafter, "model", None)
        draft_cost = step_time(draft_model, 1) / base if draft_model is not None else 0.0
    finally:
        engine.close()
    alpha = acceptance_rate(total)
    predicted = {k: predicted_speedup(alpha, k, draft_cost, verify[k]) for k in ks}
    return DrafterReport(config.num_speculative_tokens, len(prompts), generated, total, draft_cost, verify, predicted)


def _add(total: SpecStats, one: SpecStats) -> None:
    total.num_drafts += one.num_drafts
    total.num_draft_tokens += one.num_draft_tokens
    total.num_accepted_tokens += one.num_accepted_tokens
    per_position = total.accepted_per_position
    per_position.extend([0] * (len(one.accepted_per_position) - len(per_position)))
    for i, count in enumerate(one.accepted_per_position):
        per_position[i] += count
