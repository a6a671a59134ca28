"""The one retry policy of the bridge (Gladia reconnects and session creation, webhook retries):
exponential backoff with a ceiling and jitter, pure and with an injectable random source."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial * 2 ** (attempt - 1)``, at most ``maximum``, times a factor drawn in
    ``[1 - jitter, 1 + jitter]`` so that many retries started at once spread out."""

    initial: float
    maximum: float
    jitter: float = 0.2
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        base: float = min(self.initial * 2 ** max(0, attempt - 1), self.maximum)
        factor: float = self.uniform(1 - self.jitter, 1 + self.jitter)
        return base * factor
