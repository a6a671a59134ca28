"""The clock the I/O shell reads: wall time and sleeping, injectable so that tests of retries and
ages (webhook ``max_age``, a bot down for a minute) run in virtual time instead of waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Clock:
    time: Callable[[], float] = time.time  # wall-clock seconds (ages that survive a restart)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)


SYSTEM_CLOCK = Clock()
