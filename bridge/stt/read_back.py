"""A Gladia session read back after the call: ``GET /v2/live/{id}``'s answer (``StreamingResponse``)
as what the call still needs from it (pure).

* ``status``: ``queued``, ``processing``, ``done`` or ``error``; ``result`` is there once ``done``.
* The finals, with their ids when ``result.messages`` (the real-time messages the server sent, as JSON
  strings) has them, so that add-on results read back with them link to the right final; else
  ``result.transcription.utterances``, without ids.
* The realtime add-on results in ``result.messages`` (a dropped connection may have lost some).
* The post-processing analysis: ``result.summarization`` / ``result.chapterization``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import SttProtocolError
from bridge.stt.addons import AddonFailed, Entities, PostResults, Sentiments, Translation, post_results
from bridge.stt.protocol import Transcript, parse_server_message
from bridge.stt.utterance import Utterance, parse_utterance

MAX_MESSAGES = 50_000  # of result.messages read (a long call with every add-on on sends ~10 per utterance)


@dataclass(frozen=True, slots=True)
class ReadBack:
    status: str
    finals: tuple[tuple[str | None, Utterance], ...] = ()
    addons: tuple[Translation | Entities | Sentiments | AddonFailed, ...] = ()
    post: PostResults | None = None  # None until the session is done

    @property
    def done(self) -> bool:
        """Nothing more will come: the result is there, or the session failed."""
        return self.status in ("done", "error")


def read_back(data: Any) -> ReadBack:
    """Read ``GET /v2/live/{id}``'s JSON answer (any shape: what is not there is left out)."""
    if not isinstance(data, Mapping):
        return ReadBack("processing")
    status = data.get("status")
    result = data.get("result")
    if not isinstance(result, Mapping):
        return ReadBack(status if isinstance(status, str) else "processing")
    finals: list[tuple[str | None, Utterance]] = []
    addons: list[Translation | Entities | Sentiments | AddonFailed] = []
    messages = result.get("messages")
    for raw in messages[:MAX_MESSAGES] if isinstance(messages, list) else []:
        if not isinstance(raw, str):
            continue
        try:
            event = parse_server_message(raw)
        except SttProtocolError:
            continue
        if isinstance(event, Transcript) and event.is_final:
            finals.append((event.id or None, event.utterance))
        elif isinstance(event, (Translation, Entities, Sentiments)) or (
            isinstance(event, AddonFailed) and event.utterance_id
        ):
            addons.append(event)
    if not finals:
        transcription = result.get("transcription")
        utterances = transcription.get("utterances") if isinstance(transcription, Mapping) else None
        finals = [(None, parse_utterance(u)) for u in utterances or [] if isinstance(u, Mapping)]
    return ReadBack(
        "done" if status is None else str(status),
        tuple(finals),
        tuple(addons),
        post_results("result", result),
    )
