"""jambonz verbs for a transfer (pure), as JSON-able lists.

When the bridge closes a ``listen`` socket, jambonz ends the verb and requests its ``actionHook``; a
non-empty array of verbs in the answer replaces the rest of the application
(jambonz/jambonz-feature-server@389c65e ``lib/tasks/listen.js``, ``lib/tasks/task.js``). So:

- a transfer is a ``dial`` (:func:`dial_verbs`): ``target`` ``{"type": "phone", "number"}`` or
  ``{"type": "sip", "sipUri"}``, ``answerOnBridge``, ``timeout``, ``actionHook`` (gets
  ``dial_call_status``) and ``confirmHook``: an application run on the called party after they answer
  and before they are connected, here a ``play`` of the briefing (:func:`announce_verbs`);
- the return to the bot is a ``listen`` again (:func:`return_verbs`) with what
  ``bridge/adapters/audiofork.py`` reads from it: jambonz sends ``sampleRate``, ``mixType`` and the call
  info with ``metadata`` merged in as the first text frame, plays the bridge's ``playAudio`` (JSON, not
  streamed) while bidirectional audio is on, and passes keys as ``{"event": "dtmf"}`` with ``passDtmf``.
  ``bidirectionalAudio`` is left out: it defaults to enabled and non-streaming (``listen.js`` at
  389c65e: ``enabled`` unless ``disableBidirectionalAudio``), and releases from before the property
  (added to verb-specifications in 8a96b05, 2024-03) refuse verbs with unknown properties.

Property names and types follow jambonz/verb-specifications@1b1452d ``specs.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.control.allow import destination


def dial_verbs(
    to: str,
    *,
    caller_id: str | None,
    ring_timeout_s: int,
    action_hook: str,
    confirm_hook: str | None,
) -> list[dict[str, Any]]:
    """``dial`` the person at ``to`` (E.164 or SIP URI) for ``ring_timeout_s`` seconds; jambonz posts the
    outcome to ``action_hook`` and runs ``confirm_hook``'s verbs on the person who answered.

    Raises:
        ValueError: ``to`` is neither an E.164 number nor a SIP URI.
    """
    target = {"type": "sip", "sipUri": to} if destination(to) == "sip" else {"type": "phone", "number": to}
    dial: dict[str, Any] = {
        "verb": "dial",
        "target": [target],
        "answerOnBridge": True,
        "timeout": int(ring_timeout_s),
        "actionHook": action_hook,
    }
    if caller_id:
        dial["callerId"] = caller_id
    if confirm_hook:
        dial["confirmHook"] = confirm_hook
    return [dial]


def announce_verbs(audio_url: str) -> list[dict[str, Any]]:
    """The briefing (the ``confirmHook`` application): the bridge's audio, played once."""
    return [{"verb": "play", "url": audio_url}]


def return_verbs(
    ws_url: str,
    *,
    metadata: Mapping[str, str],
    sample_rate: int,
    action_hook: str | None = None,
    mix_type: str = "mono",
    pass_dtmf: bool = True,
) -> list[dict[str, Any]]:
    """The caller back to the bot: a ``listen`` to the bridge's WebSocket at ``sample_rate`` Hz with
    ``metadata`` in its first frame; ``action_hook`` is requested when that socket closes in turn."""
    listen: dict[str, Any] = {
        "verb": "listen",
        "url": ws_url,
        "mixType": mix_type,
        "sampleRate": int(sample_rate),
        "metadata": dict(metadata),
        "passDtmf": pass_dtmf,
    }
    if action_hook:
        listen["actionHook"] = action_hook
    return [listen]
