"""The bot's action vocabulary (pure): what a bot may ask the bridge to do on a call.

One vocabulary for every channel: the ``{"actions": [...]}`` body of a webhook answer, ``POST
/v1/calls/{call_id}/actions`` and the bot WebSocket. :func:`parse_actions` validates a request and
returns typed actions, each with an ``id`` (the bot's, or one the bridge assigns); a bad request
raises :class:`~bridge.errors.ActionError` whose message names the bad field (HTTP 422), or
``too_large`` (HTTP 413).

=============  ===============================================================================
``say``        speak ``text`` (``voice``; ``interrupt``: speech|dtmf|any|none; ``queue``:
               append|replace; ``in_reply_to``: the utterance id it answers). On the WebSocket
               also streamed: ``stream_id`` + ``last`` (speaking starts at the first sentence).
``play``       play a WAV: ``audio`` (base64) or ``url`` (https, hosts in ``BRIDGE_PLAY_URL_HOSTS``)
``audio``      (WebSocket) the bot's own TTS: ``stream_id``, ``audio`` (base64 PCM16 LE mono),
               ``sample_rate``, ``last``
``stop``       drop the queue and clear what the carrier holds
``mark``       ``name``: a ``playback.mark`` event when playback reaches this point
``dtmf``       ``digits`` (0-9 * # A-D, ``w`` = 500 ms pause)
``hangup``     ``after``: now | playback (the default: when the carrier confirms the last audio played)
``configure``  ``barge_in`` settings, ``voice``, ``stale_replies``, ``sensitive`` (a pause)
``transfer``   send the caller to a person: ``to`` (E.164 or a ``sip:`` URI), ``caller_id``,
               ``after`` (playback|now), ``announce`` (spoken to the person before the caller is
               connected), ``ring_timeout_s``, ``on_no_answer`` (return|hangup); see bridge.call.transfer
``gather``     collect keys: ``num_digits``, ``finish_on_key``, ``timeout_ms``,
               ``inter_digit_timeout_ms``, ``sensitive``, ``prompt`` (a ``say`` or ``play``); ends
               with one ``dtmf.gathered`` event (see bridge.reply.gather)
=============  ===============================================================================
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from bridge.errors import ActionError
from bridge.untrusted import MAX_JSON_DEPTH, loads

MAX_ACTIONS = 32  # per request
MAX_TEXT_CHARS = 4000  # per say
MAX_AUDIO_BYTES = 4 * 1024 * 1024  # decoded, per play/audio action
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # the whole JSON body (base64 audio included)

Interrupt = Literal["speech", "dtmf", "any", "none"]
QueueMode = Literal["append", "replace"]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: "act_" + secrets.token_hex(8), min_length=1, max_length=64)


class _Playable(_Action):
    interrupt: Interrupt = "speech"
    queue: QueueMode = "append"
    in_reply_to: str | None = Field(None, max_length=128)


class Say(_Playable):
    type: Literal["say"]
    text: str = Field(max_length=MAX_TEXT_CHARS)
    voice: str | None = Field(None, max_length=128)
    stream_id: str | None = Field(None, min_length=1, max_length=64)  # WebSocket: streamed text
    last: bool = True  # streamed text: this piece ends the stream

    @model_validator(mode="before")
    @classmethod
    def _named_by_stream(cls, data: Any) -> Any:
        return _streamed_id(data)

    @model_validator(mode="after")
    def _has_text(self) -> Say:
        if self.stream_id is None and not self.text.strip():
            raise ValueError("say needs a non-empty 'text'")
        return self


def _streamed_id(data: Any) -> Any:
    """A streamed ``say`` or ``audio`` is one action named by its stream: its id is the ``stream_id``
    (in ``actions.accepted`` as in the ``playback.*`` events); another ``id`` is refused."""
    if isinstance(data, dict) and isinstance(data.get("stream_id"), str):
        given = data.get("id")
        if given is None:
            return {**data, "id": data["stream_id"]}
        if given != data["stream_id"]:
            raise ValueError("a streamed action is named by its stream_id: leave 'id' out or set it to the stream_id")
    return data


def _decoded(value: str, field: str) -> bytes:
    if len(value) > MAX_AUDIO_BYTES * 4 // 3 + 4:
        raise ValueError(f"'{field}' is over {MAX_AUDIO_BYTES // (1024 * 1024)} MiB")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"'{field}' is not base64: {exc}") from exc


class _WavSource(BaseModel):
    """A WAV to play: ``audio`` (base64 in JSON) or an https ``url``, exactly one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audio: bytes | None = None  # a WAV file (base64 in JSON)
    url: str | None = Field(None, max_length=2048)

    @field_validator("audio", mode="before")
    @classmethod
    def _base64(cls, value: Any) -> Any:
        return _decoded(value, "audio") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.audio is None) == (self.url is None):
            raise ValueError("play needs exactly one of 'audio' (base64 WAV) and 'url'")
        if self.url is not None and not self.url.startswith("https://"):
            raise ValueError("play 'url' must be https://")
        return self


class Play(_Playable, _WavSource):
    type: Literal["play"]


class AudioChunk(_Playable):
    type: Literal["audio"]
    stream_id: str = Field(min_length=1, max_length=64)
    audio: bytes = b""  # PCM16 little-endian mono (base64 in JSON)
    sample_rate: Literal[8000, 16000, 22050, 24000, 32000, 44100, 48000]
    last: bool = False

    @model_validator(mode="before")
    @classmethod
    def _named_by_stream(cls, data: Any) -> Any:
        return _streamed_id(data)

    @field_validator("audio", mode="before")
    @classmethod
    def _base64(cls, value: Any) -> Any:
        return _decoded(value, "audio") if isinstance(value, str) else value

    @field_validator("audio")
    @classmethod
    def _whole_samples(cls, value: bytes) -> bytes:
        if len(value) % 2:
            raise ValueError("'audio' must be whole 16-bit samples (an even number of bytes)")
        return value


class Stop(_Action):
    type: Literal["stop"]


class Mark(_Action):
    type: Literal["mark"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")


class SendDtmf(_Action):
    type: Literal["dtmf"]
    digits: str = Field(min_length=1, max_length=32, pattern=r"^[0-9*#A-Dw]+$")


class Hangup(_Action):
    type: Literal["hangup"]
    after: Literal["now", "playback"] = "playback"


class BargeIn(BaseModel):
    """Barge-in policy (all optional in a ``configure``; unset keeps the current value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    min_words: int | None = Field(None, ge=1, le=10)  # words that confirm an interruption
    false_interruption_timeout: float | None = Field(None, gt=0, le=10)  # s before a paused reply resumes
    echo_guard_ms: int | None = Field(None, ge=0, le=5000)  # speech this soon after playback starts is echo


class Configure(_Action):
    type: Literal["configure"]
    barge_in: BargeIn | None = None
    voice: str | None = Field(None, max_length=128)
    stale_replies: Literal["drop", "play"] | None = None
    sensitive: bool | None = None  # a PCI-style pause on (true) or off (false): bridge.reply.pausing


E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # ITU-T E.164: a + then at most 15 digits
# RFC 3261 SIP-URI, kept simple and strict: sip:/sips:, an optional user part, a host (name, IPv4 or
# [IPv6]), an optional port and ;parameters; no spaces, no quotes, nothing markup could carry.
SIP_URI = re.compile(
    r"sips?:(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+@)?"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?(?:;[A-Za-z0-9\-_.!~*'()&=+$%]+)*"
)
MAX_ANNOUNCE_CHARS = 1000


def transfer_target(value: str) -> str:
    """An E.164 number or a ``sip:``/``sips:`` URI, else ValueError (the 422 names the field)."""
    if E164.fullmatch(value) or (len(value) <= 256 and SIP_URI.fullmatch(value)):
        return value
    raise ValueError("must be an E.164 number (+15551230000) or a sip: URI (sip:agent@pbx.example.com)")


class Transfer(_Action):
    """Send the caller to a person (bridge.call.transfer carries it out, per carrier)."""

    type: Literal["transfer"]
    to: str = Field(max_length=256)
    caller_id: str | None = Field(None, max_length=16)
    after: Literal["now", "playback"] = "playback"
    announce: str | None = Field(None, min_length=1, max_length=MAX_ANNOUNCE_CHARS)
    ring_timeout_s: int = Field(30, ge=5, le=600)
    on_no_answer: Literal["return", "hangup"] = "return"

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        return transfer_target(value)

    @field_validator("caller_id")
    @classmethod
    def _caller_id(cls, value: str | None) -> str | None:
        if value is not None and not E164.fullmatch(value):
            raise ValueError("must be an E.164 number (+15550002)")
        return value


class PromptSay(BaseModel):
    """A gather's prompt: spoken (``say`` without the streaming fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["say"]
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    voice: str | None = Field(None, max_length=128)


class PromptPlay(_WavSource):
    """A gather's prompt: a WAV (``play``'s two sources)."""

    type: Literal["play"]


DTMF_KEYS = "0123456789*#ABCD"


class Gather(_Action):
    """Collect the caller's keys; one ``dtmf.gathered`` ends it (bridge.reply.gather)."""

    type: Literal["gather"]
    num_digits: int | None = Field(None, ge=1, le=64)
    finish_on_key: str = Field("#", max_length=1)  # "" : no finishing key
    timeout_ms: int = Field(8000, ge=100, le=120_000)  # to the first key, counted once the prompt has played
    inter_digit_timeout_ms: int = Field(3000, ge=100, le=60_000)  # between keys
    sensitive: bool = False
    prompt: Annotated[PromptSay | PromptPlay, Field(discriminator="type")] | None = None

    @field_validator("finish_on_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if value and value not in DTMF_KEYS:
            raise ValueError(f"must be one of {DTMF_KEYS} or empty")
        return value

    @model_validator(mode="after")
    def _ends(self) -> Gather:
        if self.num_digits is None and not self.finish_on_key:
            raise ValueError("a gather needs 'num_digits' or a 'finish_on_key' (or it only ends by timeout)")
        return self


Action = Annotated[
    Say | Play | AudioChunk | Stop | Mark | SendDtmf | Hangup | Configure | Transfer | Gather,
    Field(discriminator="type"),
]
_ACTIONS = TypeAdapter(list[Action])
ACTION_TYPES = ("say", "play", "audio", "stop", "mark", "dtmf", "hangup", "configure", "transfer", "gather")


def parse_actions(body: bytes | str | dict[str, Any] | list[Any]) -> list[Action]:
    """``{"actions": [...]}`` (or the list alone) to typed actions.

    Raises:
        ActionError: not JSON (or nested deeper than ``MAX_JSON_DEPTH``), not that shape, an unknown
            type, a bad field (the message names it, e.g. ``actions[1].text``), two actions with one
            ``id`` (``actions[3].id: duplicate id 'x'``), or too large (``too_large``).
    """
    if isinstance(body, bytes | str):
        if len(body) > MAX_REQUEST_BYTES:
            raise ActionError(f"request body over {MAX_REQUEST_BYTES // (1024 * 1024)} MiB", too_large=True)
        try:
            body = loads(body)  # nested deeper than MAX_JSON_DEPTH: refused before parsing
        except ValueError as exc:
            raise ActionError(f"body is not JSON: {exc}") from exc
    items = body.get("actions") if isinstance(body, dict) else body
    if isinstance(body, dict) and set(body) - {"actions"}:
        raise ActionError(f'unknown key(s) {sorted(set(body) - {"actions"})}: the body is {{"actions": [...]}}')
    if not isinstance(items, list):
        raise ActionError('the body must be {"actions": [...]}')
    if len(items) > MAX_ACTIONS:
        raise ActionError(f"{len(items)} actions in one request; at most {MAX_ACTIONS}", too_large=True)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") not in ACTION_TYPES:
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise ActionError(f"actions[{i}].type: {kind!r} is not one of {', '.join(ACTION_TYPES)}")
    try:
        actions = _ACTIONS.validate_python(items)
    except ValidationError as exc:
        raise ActionError(_first_error(exc)) from None
    except RecursionError:  # a dict or list given already parsed, nested too deep
        raise ActionError(f"actions nested deeper than {MAX_JSON_DEPTH} levels") from None
    seen: set[str] = set()
    for i, item in enumerate(items):
        given = item.get("id")  # only ids the bot chose: the bridge's own are unique
        if isinstance(given, str):
            if given in seen:
                raise ActionError(f"actions[{i}].id: duplicate id {given!r}")
            seen.add(given)
    return actions


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = err["loc"]
    path = f"actions[{loc[0]}]" if loc else "actions"
    # loc is (index, type tag, field...): the tag is the action's type, not a field the bot wrote
    for part in loc[2:]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {message}"
