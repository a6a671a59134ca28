"""Where a bridge keeps its calls' record: the SQLite file in the data directory (one machine, the default),
or PostgreSQL when ``BRIDGE_DATABASE_URL`` is set (a fleet: any instance answers for any call's record;
:mod:`bridge.transcripts_pg`). Both stores have one interface; psycopg is imported only when the URL is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from bridge.settings import Settings
    from bridge.transcripts import TranscriptStore
    from bridge.transcripts_pg import PgTranscriptStore

RecordStore: TypeAlias = "TranscriptStore | PgTranscriptStore"


def open_record_store(
    settings: Settings, clock: Callable[[], float], report: Callable[[str, dict[str, Any]], None]
) -> RecordStore:
    """Open the store the settings name (blocking: run it in a thread).

    Raises:
        Exception: the store cannot be opened (a file that cannot be created, a malformed URL).
    """
    config = settings.transcripts
    if config.database_url is not None:
        from bridge.transcripts_pg import PgTranscriptStore

        return PgTranscriptStore(
            config.database_url.get_secret_value(),
            max_queue=config.max_queue,
            busy_timeout=config.busy_timeout,
            clock=clock,
            report=report,
        )
    from bridge.transcripts import TranscriptStore

    return TranscriptStore.in_dir(
        settings.server.data_dir,
        max_queue=config.max_queue,
        busy_timeout=config.busy_timeout,
        clock=clock,
        report=report,
    )
