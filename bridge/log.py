"""Logging: structlog configuration, JSON lines (console rendering on a TTY). Nothing else.

Per-call context (call_id, provider, call_sid, stream_sid) is bound with
``structlog.contextvars`` in the call's task, so every line a call writes, including those
of its STT and delivery tasks, carries it.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog


def configure_logging(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog once at start-up (stdout)."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    structlog.configure(
        processors=processors(use_console),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


def processors(use_console: bool) -> list[structlog.typing.Processor]:
    """The processor chain: context, level, UTC time, exception rendering, then the renderer."""
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    chain: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not use_console:
        # Tracebacks as data, without local variables: they hold phone numbers, stream parameters
        # and message bodies, which have no place in a log.
        chain.append(
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        )
    chain.append(renderer)
    return chain
