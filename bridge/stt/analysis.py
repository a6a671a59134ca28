"""A call's post-call analysis: what Gladia's post-processing add-ons (summarization, chapterization)
gave for each of the call's sessions, and ``transcript.completed``'s ``analysis`` (pure).

The results come over the session socket (``post_final_transcript``, ``post_summarization``,
``post_chapterization``) or, when the socket closed before they came (a drop during post-processing, a
message skipped for its size, a hang-up whose wait for ``end_session`` ran out), from ``GET
/v2/live/{id}`` once the session is ``done`` (:meth:`bridge.stt.stream.SttStream.analysis`). A session
is complete when every add-on asked for has its result or its error.

``analysis``: ``{"status": "done", "summary": ..., "chapters": [...]}`` (``errors`` too, per add-on,
when some failed), ``{"status": "failed", "errors": {...}}`` when nothing asked for came, or
``{"status": "timeout"}`` when the results did not come within ``stt.analysis_timeout``. A call
carried by more than one Gladia session (one replaced another) has one summary per session: they are
joined in order, a blank line between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.stt.addons import PostResults


@dataclass(slots=True)
class _SessionResults:
    summary: str | None = None
    chapters: tuple[dict[str, Any], ...] | None = None
    errors: dict[str, str] = field(default_factory=dict)


class CallAnalysis:
    """See the module docstring. ``wanted``: the post-processing add-ons the call's profile asks for."""

    def __init__(self, wanted: tuple[str, ...]) -> None:
        self.wanted = wanted
        self._sessions: dict[str, _SessionResults] = {}

    def take(self, session_id: str, post: PostResults) -> None:
        """What one post-processing message (or a read-back) gives for a session; what it lacks keeps
        what came before."""
        results = self._sessions.setdefault(session_id, _SessionResults())
        if post.summary is not None and "summarization" in self.wanted:
            results.summary = post.summary
            results.errors.pop("summarization", None)
        if post.chapters is not None and "chapterization" in self.wanted:
            results.chapters = post.chapters
            results.errors.pop("chapterization", None)
        for addon, error in post.failed:
            if addon in self.wanted and not self._has(results, addon):
                results.errors[addon] = error

    def fail(self, session_id: str, error: str) -> None:
        """The session will give nothing more (Gladia says ``error``): what it lacks failed."""
        results = self._sessions.setdefault(session_id, _SessionResults())
        for addon in self.wanted:
            if not self._has(results, addon):
                results.errors.setdefault(addon, error)

    def complete(self, session_id: str) -> bool:
        results = self._sessions.get(session_id)
        return results is not None and all(self._has(results, a) or a in results.errors for a in self.wanted)

    def json(self, session_ids: list[str], timed_out: bool = False) -> dict[str, Any]:
        """``transcript.completed``'s ``analysis`` for the call's sessions, in order."""
        if timed_out:
            return {"status": "timeout"}
        sessions = [self._sessions.get(s, _SessionResults()) for s in session_ids]
        out: dict[str, Any] = {}
        if "summarization" in self.wanted:
            summaries = [s.summary for s in sessions if s.summary]
            if summaries or any(s.summary is not None for s in sessions):
                out["summary"] = "\n\n".join(summaries)
        if "chapterization" in self.wanted and any(s.chapters is not None for s in sessions):
            out["chapters"] = [c for s in sessions for c in s.chapters or ()]
        errors = {a: e for s in sessions for a, e in s.errors.items()}
        if errors:
            out["errors"] = errors
        return {"status": "done" if "summary" in out or "chapters" in out else "failed", **out}

    @staticmethod
    def _has(results: _SessionResults, addon: str) -> bool:
        return (results.summary if addon == "summarization" else results.chapters) is not None
