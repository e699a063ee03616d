"""Cost-aware draft length: propose the k that maximises expected tokens per unit of step cost.

A step that drafts k tokens costs k draft steps plus one verification of k+1 tokens, and yields
(1 - α^(k+1)) / (1 - α) tokens on average when each draft token is accepted with probability α
(Leviathan et al. 2023). Both costs are measured in target decode steps: a drafter states its own
(`Drafter.cost`: 0 for a lookup, ~0.1 for the int8 0.5B draft of the 1.5B target here), and
verification is flat up to 5 tokens and grows slowly after (bench/engine/step_cost.py, packed engine:
1×5 ≈ 1.0, 1×8 ≈ 1.4, 1×16 ≈ 2.0 single steps; a GPU is flatter still). α is re-estimated from each
sequence's own drafts, so a drafter that keeps missing drafts short and one that keeps hitting drafts long.
"""

from __future__ import annotations

from dataclasses import dataclass

FLAT_VERIFY_WIDTH = 5
VERIFY_COST_PER_EXTRA_TOKEN = 0.08
ALPHA_PRIOR = 0.6
ALPHA_SMOOTHING = 0.3


def verify_cost(width: int) -> float:
    """Target steps to score `width` tokens in one forward pass."""
    return 1.0 + VERIFY_COST_PER_EXTRA_TOKEN * max(0, width - FLAT_VERIFY_WIDTH)


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens one speculative step yields: accepted drafts plus the target's own next token."""
    return float(k + 1) if alpha >= 1.0 else (1 - alpha ** (k + 1)) / (1 - alpha)


def best_k(alpha: float, draft_cost: float, k_min: int, k_max: int) -> int:
    return max(range(k_min, k_max + 1),
               key=lambda k: expected_tokens(alpha, k) / (k * draft_cost + verify_cost(k + 1)))


@dataclass
class AdaptiveK:
    k: int = 4  # the configured start, used until the first draft has been verified
    k_min: int = 1
    k_max: int = 16
    draft_cost: float = 0.0  # target steps per drafted token (Drafter.cost)
    alpha: float = ALPHA_PRIOR

    def update(self, proposed: int, accepted: int) -> None:
        """Each draft token up to and including the first rejection is one acceptance trial."""
        if proposed == 0:
            return
        trials = accepted + (1 if accepted < proposed else 0)
        observed = accepted / trials
        self.alpha = (1 - ALPHA_SMOOTHING) * self.alpha + ALPHA_SMOOTHING * observed
        self.k = best_k(min(self.alpha, 0.99), self.draft_cost, self.k_min, self.k_max)
