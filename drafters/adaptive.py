"""Adaptive draft length: grow k while drafts are accepted, shrink it after rejections.

A drafter that keeps missing costs verification width for nothing; one that keeps hitting (a
near-duplicate answer, a code edit copying the prompt) should be allowed to propose long runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptiveK:
    k: int = 4
    k_min: int = 1
    k_max: int = 16

    def update(self, proposed: int, accepted: int) -> None:
        if proposed == 0:
            return
        if accepted == proposed:
            self.k = min(self.k_max, self.k * 2)
        elif accepted < proposed // 2:
            self.k = max(self.k_min, accepted + 1)
