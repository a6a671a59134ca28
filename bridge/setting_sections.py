"""The settings' sections: one frozen pydantic model per ``[section]`` of the settings (server, gladia,
webhook, twilio, carriers, log, stt, local_stt, reply, tts, bot_ws, parties, fleet, control, outbound; the
record's sections are in :mod:`bridge.setting_records`), with their defaults (the one source of them) and the
checks of each field. ``bridge.settings`` assembles them into :class:`~bridge.settings.Settings` and loads them
from the file, the environment and the flags.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator

from bridge.adapters import CARRIERS
from bridge.stt_profile import ADDON_SWITCHES, DEFAULT_PROFILE, SttProfile, deep_merge


def _url_of(*schemes: str) -> AfterValidator:
    """An empty string, or a URL with one of ``schemes``."""

    def check(value: str) -> str:
        if value and urlsplit(value).scheme not in schemes:
            raise ValueError(f"must be a{'n' if schemes[-1] == 'http' else ''} {schemes[-1]}(s) URL")
        return value

    return AfterValidator(check)


# A plain ``str`` setting that is empty (unset) or an http(s) / ws(s) URL: not pydantic's ``HttpUrl`` type.
HttpUrlOrEmpty = Annotated[str, _url_of("https", "http")]
WsUrlOrEmpty = Annotated[str, _url_of("wss", "ws")]


class StrictModel(BaseModel):
    """A settings model: unknown keys are refused, values never change after start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(StrictModel):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = ""
    data_dir: Path = Path("./data")
    max_message_bytes: int = Field(65536, ge=1024)
    start_timeout: float = Field(10.0, gt=0)
    shutdown_timeout: float = Field(30.0, ge=0)
    max_calls: int = Field(1000, ge=1)
    stream_restart_grace: float = Field(10.0, ge=0)
    max_suspended_calls: int = Field(100, ge=0)
    workers: int | Literal["auto"] = 1
    # Key of the per-call resume token (HMAC of the call id) a restarted stream must carry; unset: a
    # random key per process. Set it when a restart may reach another process (fleet mode).
    secret: SecretStr | None = None
    keepalive_timeout: float = Field(15.0, gt=0)
    max_connections: int = Field(10000, ge=16)
    ws_heartbeat: float = Field(30.0, ge=0)
    media_timeout: float = Field(30.0, ge=0)
    max_audio_speed: float = Field(1.5, ge=0)
    audio_burst_seconds: float = Field(30.0, ge=0)

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1, or auto (one per core)")
        return value

    @property
    def worker_count(self) -> int:
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("https", "http", "wss", "ws"):
            raise ValueError("must be an absolute http(s) URL such as https://bridge.example.org")
        return value.rstrip("/")


class GladiaSettings(StrictModel):
    # None: no Gladia server named. With GLADIA_API_KEY that means Gladia's cloud (GLADIA_CLOUD);
    # without a key, ``bridge serve`` runs the local Gladia-compatible server and points this at it.
    api_url: str | None = None
    api_key: SecretStr | None = None
    region: str = ""
    http_timeout: float = Field(10.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    init_retry_seconds: float = Field(60.0, ge=0)
    max_sessions: int = Field(0, ge=0)
    keepalive_seconds: float = Field(10.0, ge=0)
    chunk_ms: int = Field(20, ge=10, le=1000)
    replay_buffer_seconds: float = Field(60.0, gt=0, le=3600)
    reconnect_initial_delay: float = Field(0.1, ge=0)
    reconnect_max_delay: float = Field(5.0, ge=0)
    finish_timeout: float = Field(15.0, gt=0)

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if urlsplit(value).scheme not in ("https", "http"):
            raise ValueError("must be an http(s) URL such as https://api.gladia.io")
        return value.rstrip("/")


class WebhookSettings(StrictModel):
    url: HttpUrlOrEmpty = ""
    secret: SecretStr | None = None
    timeout: float = Field(5.0, gt=0)
    retry_initial_delay: float = Field(0.5, ge=0)
    retry_max_delay: float = Field(30.0, ge=0)
    max_age: float = Field(600.0, gt=0)
    max_pending_events: int = Field(10000, ge=1)
    outbox_commit_ms: float = Field(50.0, ge=0, le=1000)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        from standardwebhooks.webhooks import Webhook

        try:
            Webhook(value.get_secret_value())
        except Exception as exc:  # the package raises plain errors for bad base64
            raise ValueError("is not a Standard Webhooks secret (whsec_<base64>)") from exc
        return value


DIAL_NUMBER = re.compile(r"\+?[0-9]{3,15}")


def _dial_number(value: str) -> str:
    if value and not DIAL_NUMBER.fullmatch(value):
        raise ValueError("must be a phone number: digits, optionally after a +, e.g. +15551234567")
    return value


DialNumber = Annotated[str, AfterValidator(_dial_number)]


class TwilioNumberSettings(StrictModel):
    """What ``/twilio/voice`` answers for calls to one number."""

    mode: Literal["connect", "fork"] = "fork"
    dial: DialNumber = ""  # fork mode: <Dial> this number after the stream starts


class TwilioSettings(StrictModel):
    auth_token: SecretStr | None = None
    # Where the call goes when the bot hangs up or the stream ends (a <Redirect> after </Connect>);
    # empty: <Hangup/>.
    after_stream_url: HttpUrlOrEmpty = ""
    # What /twilio/voice answers: `connect` (the bot talks to the caller: <Connect><Stream>) or `fork`
    # (a call between people, transcribed: <Start><Stream track="both_tracks">, then <Dial> or <Redirect>).
    # Per number in `numbers`, or per request with ?mode=fork&dial=+1555... on the voice URL.
    voice_mode: Literal["connect", "fork"] = "connect"
    numbers: dict[str, TwilioNumberSettings] = {}
    # Fork mode with no number to dial: the application's own TwiML, fetched with a <Redirect>.
    fork_redirect_url: HttpUrlOrEmpty = ""


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]{0,31}")


def speaker_labels(value: tuple[str, str]) -> tuple[str, str]:
    """Two distinct labels of 1-32 letters, digits, spaces, ``_.-``."""
    for label in value:
        if not _LABEL.fullmatch(label):
            raise ValueError(f"{label!r} is not a label (1-32 letters, digits, spaces, _ . -)")
    if value[0] == value[1]:
        raise ValueError("the two labels must differ")
    return value


def _label_list(value: Any) -> Any:
    return tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else value  # "caller,agent"


SpeakerLabels = Annotated[tuple[str, str], BeforeValidator(_label_list), AfterValidator(speaker_labels)]


class PartiesSettings(StrictModel):
    """Both parties of a call (a stream with two tracks): who is who, and how far a leg may lag."""

    labels: SpeakerLabels = ("caller", "agent")  # channel 0 (the caller, inbound), channel 1 (the other party)
    numbers: dict[str, SpeakerLabels] = {}  # labels for calls to a number (the stream parameter wins)
    max_delay_ms: float = Field(300.0, ge=20, le=5000)  # audio held for a late frame or a quiet leg


class ReplySettings(StrictModel):
    """The way back to the caller: playout, barge-in, the bot's REST API (see bridge.reply)."""

    lead_ms: float = Field(300.0, ge=40, le=5000)  # audio sent ahead of what the caller hears
    lead_ms_by_carrier: dict[str, float] = {}  # a carrier's own lead, e.g. {exotel = 400}
    chunk_ms: float = Field(100.0, ge=20, le=1000)  # audio per message (at least the carrier's minimum)
    mark_grace: float = Field(10.0, gt=0)  # s a lost mark may hold an action after the clock says it played
    stale_replies: Literal["drop", "play"] = "drop"  # a reply to an utterance the caller has moved past
    barge_in: bool = True
    min_words: int = Field(2, ge=1, le=10)
    false_interruption_timeout: float = Field(2.0, gt=0, le=10)
    echo_guard_ms: int = Field(300, ge=0, le=5000)
    sensitive_max_s: float = Field(120.0, gt=0, le=3600)  # a sensitive pause ends by itself after this
    api_token: SecretStr | None = None  # BRIDGE_API_TOKEN: unset, /v1/ answers 403
    play_url_hosts: tuple[str, ...] = ()  # hosts a `play` url may name (https only); nothing else is fetched
    max_play_bytes: int = Field(8 * 1024 * 1024, ge=1024)

    @field_validator("lead_ms_by_carrier")
    @classmethod
    def _leads(cls, value: dict[str, float]) -> dict[str, float]:
        for carrier, lead in value.items():
            if carrier not in CARRIERS:
                raise ValueError(f"{carrier!r} is not a carrier ({', '.join(CARRIERS)})")
            if not 40 <= lead <= 5000:
                raise ValueError(f"{carrier}: {lead} ms is outside 40-5000")
        return value

    @field_validator("play_url_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        if isinstance(value, str):  # BRIDGE_PLAY_URL_HOSTS=prompts.example.com,cdn.example.com
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value


class TtsSettings(StrictModel):
    """Speech out. No api_url: the embedded Piper voice (``local`` extra)."""

    api_url: HttpUrlOrEmpty = ""  # an OpenAI-compatible server: POST {api_url}/v1/audio/speech
    api_key: SecretStr | None = None
    voice: str = "alloy"
    model: str = "tts-1"
    sample_rate: int = Field(24000, ge=8000, le=48000)  # of the endpoint's raw PCM
    timeout: float = Field(10.0, gt=0)
    cache_mb: int = Field(32, ge=0)


class BotWsSettings(StrictModel):
    url: WsUrlOrEmpty = ""  # BOT_WS_URL: the bridge dials it once per call
    token: SecretStr | None = None
    reconnect_max_delay: float = Field(5.0, gt=0)


def _redis_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None and urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


class FleetSettings(StrictModel):
    """Fleet mode: several bridge instances on one Redis (see bridge.fleet). No URL: one machine, SQLite."""

    redis_url: Annotated[SecretStr | None, AfterValidator(_redis_url)] = None  # BRIDGE_REDIS_URL (may hold a password)
    instance_id: str = Field("", max_length=200)  # BRIDGE_INSTANCE_ID; empty: host name + pid (per worker)
    key_prefix: str = Field("bridge", min_length=1, max_length=64)  # every key the bridge writes starts with it
    lease_ttl: float = Field(10.0, gt=0, le=300)  # s a call stays owned by an instance that stopped renewing
    renew_interval: float = Field(3.0, gt=0, le=100)  # s between lease renewals (well under lease_ttl)
    action_poll_ms: int = Field(500, ge=10, le=4000)  # the owner's blocking read of its calls' actions
    ended_ttl: float = Field(3600.0, gt=0)  # s an ended call's record stays (409, not 404, for late actions)

    @field_validator("renew_interval")
    @classmethod
    def _renew_before_expiry(cls, value: float, info: Any) -> float:
        ttl = info.data.get("lease_ttl")
        if ttl is not None and value >= ttl / 2:
            raise ValueError(f"must be under half of lease_ttl ({ttl} s), or a lease may lapse between renewals")
        return value


class CarrierSettings(StrictModel):
    audiofork_sample_rate: Literal[8000, 16000, 24000, 32000, 44100, 48000, 64000] = 8000
    tokens: dict[str, SecretStr] = {}
    vonage_signature_secret: SecretStr | None = None


def _allow_list(value: Any) -> Any:
    if isinstance(value, str):  # BRIDGE_TRANSFER_TO=+1555,+44,sip:pbx.example.com
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def _allowed_entry(value: tuple[str, ...]) -> tuple[str, ...]:
    for entry in value:
        if not (re.fullmatch(r"\+[0-9]{1,15}", entry) or re.fullmatch(r"(sips?:)?[A-Za-z0-9.\-]{1,253}", entry)):
            raise ValueError(f"{entry!r} is neither an E.164 prefix (+1555) nor a SIP domain (pbx.example.com)")
    return value


TransferAllowList = Annotated[tuple[str, ...], BeforeValidator(_allow_list), AfterValidator(_allowed_entry)]


class ControlSettings(StrictModel):
    """Call control (bridge.call.transfer): where a bot may send a call, and each carrier's call-control
    API. Every credential comes from the environment only; an ``*_api_url`` exists for tests and regions."""

    # BRIDGE_TRANSFER_TO: E.164 prefixes and SIP domains a transfer may reach; empty: transfers refused.
    transfer_to: TransferAllowList = ()
    announce_ttl: float = Field(300.0, ge=10, le=3600)  # s a signed briefing URL stays valid
    return_grace: float = Field(15.0, ge=1, le=300)  # s after the ring timeout a returning stream may take
    twilio_account_sid: str = ""  # TWILIO_ACCOUNT_SID (with TWILIO_AUTH_TOKEN): the REST call update
    twilio_api_url: HttpUrlOrEmpty = "https://api.twilio.com"
    signalwire_project_id: str = ""
    signalwire_api_token: SecretStr | None = None
    signalwire_api_url: HttpUrlOrEmpty = ""  # https://<space>.signalwire.com
    telnyx_api_key: SecretStr | None = None
    telnyx_api_url: HttpUrlOrEmpty = "https://api.telnyx.com"
    # TELNYX_PUBLIC_KEY (base64, Mission Control > Keys & Credentials): Telnyx's callbacks must be signed by it
    telnyx_public_key: str = ""
    plivo_auth_id: str = ""
    plivo_auth_token: SecretStr | None = None
    plivo_api_url: HttpUrlOrEmpty = "https://api.plivo.com"
    vonage_application_id: str = ""
    vonage_private_key: SecretStr | None = None  # the PEM itself (RS256)
    vonage_api_url: HttpUrlOrEmpty = "https://api.nexmo.com"
    jambonz_api_url: HttpUrlOrEmpty = ""
    jambonz_account_sid: str = ""
    jambonz_api_key: SecretStr | None = None
    freeswitch_esl_url: SecretStr | None = None  # esl://:password@host:8021
    # FreeSWITCH: how a number is dialled (uuid_transfer inline bridge), {to} the E.164 number; a sip:
    # URI goes to sofia/external/<uri>. Empty: only SIP URIs can be reached.
    freeswitch_dial: str = Field("", pattern=r"^$|^[A-Za-z0-9_./@:+\-]*\{to\}[A-Za-z0-9_./@:+\-]*$")
    asterisk_ari_url: HttpUrlOrEmpty = ""  # http://host:8088/ari
    asterisk_ari_user: str = ""
    asterisk_ari_password: SecretStr | None = None
    # Asterisk: the dialplan context the caller's channel continues in, at the extension ``to``
    asterisk_context: str = Field("bridge-transfer", pattern=r"^[A-Za-z0-9_\-]{1,64}$")

    @field_validator("telnyx_public_key")
    @classmethod
    def _telnyx_key(cls, value: str) -> str:
        if value:
            from bridge.control.telnyx_webhook import public_key

            public_key(value)  # ValueError: not base64 of 32 bytes
        return value


class OutboundSettings(StrictModel):
    """Calls the bridge places for the bot (``POST /v1/calls``, bridge.dial): where they may go, from which
    numbers, how many at once. The carriers' credentials and API URLs are the ``control`` section's."""

    # BRIDGE_DIAL_TO: E.164 prefixes and SIP domains an outbound call may reach; empty: outbound refused (403).
    dial_to: TransferAllowList = ()
    # BRIDGE_DIAL_FROM: the caller ids (E.164 numbers or SIP URIs, exactly) a call may be placed from.
    dial_from: tuple[str, ...] = ()
    max_pending: int = Field(20, ge=1, le=10_000)  # calls created and not yet answered or failed, at once
    # s after the ring timeout with no stream and no word from the carrier before the call counts as
    # not answered (a lost status callback must not hold a place in max_pending for ever)
    answer_grace: float = Field(20.0, ge=1, le=600)
    # s the signed links given to the carrier (status, AMD, answer markup, the stream's claim) stay valid:
    # status callbacks come until the call ends
    link_ttl: float = Field(14_400.0, ge=60, le=86_400)
    telnyx_connection_id: str = Field("", max_length=128)  # TELNYX_CONNECTION_ID: the Call Control application
    # Asterisk: the endpoint a number is dialled on ({to} the number or SIP URI), and the dialplan context
    # and extension the answered channel runs (the operator's: AMD() then Dial(WebSocket/...) to the bridge)
    asterisk_endpoint: str = Field("", pattern=r"^$|^[A-Za-z0-9_./@:+\-]*\{to\}[A-Za-z0-9_./@:+\-]*$")
    asterisk_context: str = Field("bridge-outbound", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    asterisk_extension: str = Field("s", pattern=r"^[A-Za-z0-9_+*#\-]{1,64}$")

    @field_validator("dial_from", mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # BRIDGE_DIAL_FROM=+15550002,+15550003
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("dial_from")
    @classmethod
    def _from_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not re.fullmatch(r"\+[1-9][0-9]{1,14}|sips?:[^\s,]{3,250}", entry):
                raise ValueError(f"{entry!r} is neither an E.164 number (+15550002) nor a sip: URI")
        return value


class LocalSttSettings(StrictModel):
    """The embedded speech-to-text engine ``bridge serve`` runs when no Gladia server is configured."""

    # BRIDGE_LOCAL_STT_MODEL: tiny.en (English only, the `local` extra) or base (multilingual, about 2-3x the
    # CPU per utterance, the `local-base` extra); see docs/local-stt.md for which to pick
    model: Literal["tiny.en", "base"] = "tiny.en"


class LogSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class SttSettings(StrictModel):
    default: SttProfile = DEFAULT_PROFILE
    numbers: dict[str, dict[str, Any]] = {}
    # Profile fields a call may set with <Parameter name="stt.<field>">; anything else is refused.
    per_call_parameters: tuple[str, ...] = (
        "language",
        "custom_vocabulary",
        "endpointing",
        "encoding",
        "sample_rate",
        "bit_depth",
    )
    per_call_addons: tuple[str, ...] = ()  # Gladia add-ons (paid) a call's stt.* parameters may switch on
    analysis_timeout: float = Field(120.0, gt=0, le=3600)  # transcript.completed's wait for the post-call analysis

    @field_validator("per_call_addons")
    @classmethod
    def _addons(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if unknown := [name for name in value if name not in ADDON_SWITCHES]:
            raise ValueError(f"{unknown[0]!r} is not an add-on (one of {', '.join(ADDON_SWITCHES)})")
        return value

    @field_validator("per_call_parameters")
    @classmethod
    def _per_call(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(
                    f"{name!r} is not a field name (dotted for a nested one, e.g. language_config.code_switching)"
                )
        return value

    def profile_for(self, called: str | None, overrides: Mapping[str, Any] | None = None) -> SttProfile:
        """The per-call profile: default, then the called number's table, then ``overrides``.

        Raises:
            ValueError: the merged profile is not valid (the message names the field).
        """
        body = self.default.request_body()
        if called and called in self.numbers:
            body = deep_merge(body, self.numbers[called])
        if overrides:
            body = deep_merge(body, overrides)
        profile = SttProfile.model_validate(body)
        profile.audio_format()
        return profile
