"""What a call is set up with from its first stream's ``start``: who is on each channel (speaker labels)
and how Gladia transcribes it (the STT profile). A bad stream parameter is logged once and the
configured choice is taken instead: it never refuses the call.
"""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from bridge.adapters.base import CallStarted
from bridge.call.payloads import param
from bridge.settings import Settings, speaker_labels
from bridge.stt_profile import PARAM_PREFIX, SttProfile, stt_overrides

log = structlog.get_logger("bridge.call")

SPEAKERS_PARAMETER = "bridge.speakers"  # a stream's speaker labels, channel 0 then 1: "caller,agent"


def call_speakers(settings: Settings, started: CallStarted) -> tuple[str, str]:
    """Who is on each channel: the ``bridge.speakers`` stream parameter ("caller,agent"), else the
    called number's labels (``parties.numbers``), else ``parties.labels``."""
    parties = settings.parties
    given = started.parameters.get(SPEAKERS_PARAMETER)
    if given:
        try:
            pair = tuple(v.strip() for v in given.split(","))
            if len(pair) != 2:
                raise ValueError("not two comma-separated labels")
            return speaker_labels((pair[0], pair[1]))
        except ValueError as exc:
            log.warning("call.bad_speakers_parameter", error=str(exc)[:200])
    return parties.numbers.get(param(started, "to") or "", parties.labels)


def call_profile(settings: Settings, started: CallStarted) -> tuple[SttProfile, tuple[str, ...]]:
    """The STT profile: the default, then the called number's, then the ``stt.*`` stream parameters
    that ``stt.per_call_parameters`` (and, for Gladia's add-ons, ``stt.per_call_addons``) allow (all of
    them ignored when one is invalid); and the refused parameters, one line each ("stt.x: why", at most
    10), logged here once and said to the bot in ``call.started``. On the embedded engine every add-on
    request is refused: it does none of them."""
    stt = settings.stt
    overrides, refused = stt_overrides(
        started.parameters, stt.per_call_parameters, stt.per_call_addons, embedded=settings.embedded_engine
    )
    if refused:  # one line per call, however many parameters
        log.warning("call.stt_parameters_refused", refused=refused[:10], count=len(refused))
    lines = tuple(refused[:10])
    called = param(started, "to")
    try:
        return stt.profile_for(called, overrides), lines
    except (ValidationError, ValueError) as exc:
        log.warning(
            "call.bad_stt_parameters",
            error=str(exc).splitlines()[0][:200],
            parameters=sorted(k for k in started.parameters if k.startswith(PARAM_PREFIX))[:10],
        )
    return stt.profile_for(called), lines
