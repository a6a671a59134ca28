"""Settings: the only code that reads the environment and a TOML settings file.

Precedence, lowest first: the defaults held by the models below (the one source of them;
``config/bridge.toml`` is a commented copy, checked by a test), then a TOML file when one is named
(``BRIDGE_CONFIG`` or ``--config``), then environment variables, then command-line flags. Everything is validated
once at start-up; a bad value raises :class:`~bridge.errors.ConfigError` naming the key (and the
environment variable it came from, when it did). Secrets are held as ``SecretStr`` so they never
show up in a ``repr`` or a log line.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from bridge.adapters import CARRIERS
from bridge.errors import ConfigError
from bridge.stt_profile import DEFAULT_PROFILE, SttProfile, deep_merge

GLADIA_CLOUD = "https://api.gladia.io"

# Environment variable -> dotted settings key. These names are public interface.
ENV_KEYS: dict[str, str] = {
    "BRIDGE_HOST": "server.host",
    "BRIDGE_PORT": "server.port",
    "BRIDGE_PUBLIC_URL": "server.public_url",
    "BRIDGE_DATA_DIR": "server.data_dir",
    "BRIDGE_WORKERS": "server.workers",
    "GLADIA_API_URL": "gladia.api_url",
    "GLADIA_API_KEY": "gladia.api_key",
    "BOT_WEBHOOK_URL": "webhook.url",
    "BOT_WEBHOOK_SECRET": "webhook.secret",
    "TWILIO_AUTH_TOKEN": "twilio.auth_token",
    "BRIDGE_SECRET": "server.secret",
    "VONAGE_SIGNATURE_SECRET": "carriers.vonage_signature_secret",
    "BRIDGE_LOG_LEVEL": "log.level",
    "BRIDGE_LOG_FORMAT": "log.format",
    "BRIDGE_API_TOKEN": "reply.api_token",
    "BRIDGE_PLAY_URL_HOSTS": "reply.play_url_hosts",
    "TWILIO_AFTER_STREAM_URL": "twilio.after_stream_url",
    "BOT_WS_URL": "bot_ws.url",
    "BOT_WS_TOKEN": "bot_ws.token",
    "TTS_API_URL": "tts.api_url",
    "TTS_API_KEY": "tts.api_key",
    "TTS_VOICE": "tts.voice",
    "TTS_MODEL": "tts.model",
    "BRIDGE_TRANSCRIPTS": "transcripts.enabled",
    "BRIDGE_TRANSCRIPT_RETENTION_DAYS": "transcripts.retention_days",
    "TWILIO_VOICE_MODE": "twilio.voice_mode",
    "TWILIO_FORK_REDIRECT_URL": "twilio.fork_redirect_url",
    "BRIDGE_SPEAKER_LABELS": "parties.labels",
    "BRIDGE_REDIS_URL": "fleet.redis_url",
    "BRIDGE_INSTANCE_ID": "fleet.instance_id",
}
SECRET_KEYS = frozenset(
    {
        "gladia.api_key",
        "webhook.secret",
        "twilio.auth_token",
        "server.secret",
        "carriers.vonage_signature_secret",
        "reply.api_token",
        "bot_ws.token",
        "tts.api_key",
        "fleet.redis_url",
    }
)


def _url_of(*schemes: str) -> AfterValidator:
    """An empty string, or a URL with one of ``schemes``."""

    def check(value: str) -> str:
        if value and urlsplit(value).scheme not in schemes:
            raise ValueError(f"must be a{'n' if schemes[-1] == 'http' else ''} {schemes[-1]}(s) URL")
        return value

    return AfterValidator(check)


HttpUrl = Annotated[str, _url_of("https", "http")]
WsUrl = Annotated[str, _url_of("wss", "ws")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
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


class GladiaSettings(_Strict):
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


class WebhookSettings(_Strict):
    url: HttpUrl = ""
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


class TwilioNumberSettings(_Strict):
    """What ``/twilio/voice`` answers for calls to one number."""

    mode: Literal["connect", "fork"] = "fork"
    dial: DialNumber = ""  # fork mode: <Dial> this number after the stream starts


class TwilioSettings(_Strict):
    auth_token: SecretStr | None = None
    # Where the call goes when the bot hangs up or the stream ends (a <Redirect> after </Connect>);
    # empty: <Hangup/>.
    after_stream_url: HttpUrl = ""
    # What /twilio/voice answers: `connect` (the bot talks to the caller: <Connect><Stream>) or `fork`
    # (a call between people, transcribed: <Start><Stream track="both_tracks">, then <Dial> or <Redirect>).
    # Per number in `numbers`, or per request with ?mode=fork&dial=+1555... on the voice URL.
    voice_mode: Literal["connect", "fork"] = "connect"
    numbers: dict[str, TwilioNumberSettings] = {}
    # Fork mode with no number to dial: the application's own TwiML, fetched with a <Redirect>.
    fork_redirect_url: HttpUrl = ""


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


class PartiesSettings(_Strict):
    """Both parties of a call (a stream with two tracks): who is who, and how far a leg may lag."""

    labels: SpeakerLabels = ("caller", "agent")  # channel 0 (the caller, inbound), channel 1 (the other party)
    numbers: dict[str, SpeakerLabels] = {}  # labels for calls to a number (the stream parameter wins)
    max_delay_ms: float = Field(300.0, ge=20, le=5000)  # audio held for a late frame or a quiet leg


class ReplySettings(_Strict):
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


class TtsSettings(_Strict):
    """Speech out. No api_url: the embedded Piper voice (``local`` extra)."""

    api_url: HttpUrl = ""  # an OpenAI-compatible server: POST {api_url}/v1/audio/speech
    api_key: SecretStr | None = None
    voice: str = "alloy"
    model: str = "tts-1"
    sample_rate: int = Field(24000, ge=8000, le=48000)  # of the endpoint's raw PCM
    timeout: float = Field(10.0, gt=0)
    cache_mb: int = Field(32, ge=0)


class BotWsSettings(_Strict):
    url: WsUrl = ""  # BOT_WS_URL: the bridge dials it once per call
    token: SecretStr | None = None
    reconnect_max_delay: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("wss", "ws"):
            raise ValueError("must be a ws(s) URL")
        return value


class TranscriptSettings(_Strict):
    """Transcripts on record: each call's finals in ``<data_dir>/transcripts.sqlite3`` (bridge.transcripts)."""

    enabled: bool = True  # BRIDGE_TRANSCRIPTS: false keeps nothing; /v1/calls/{id}/transcript answers 404
    retention_days: float = Field(30.0, gt=0)  # BRIDGE_TRANSCRIPT_RETENTION_DAYS: older calls are purged
    purge_interval: float = Field(3600.0, gt=0)  # seconds between purges (one runs at start-up)
    max_queue: int = Field(10000, ge=1)  # writes waiting for the disk; beyond, dropped, counted and logged
    busy_timeout: float = Field(5.0, gt=0)  # seconds a write waits for another worker's lock


# Carriers authenticated by a shared secret: <NAME>_STREAM_TOKEN in the environment.
TOKEN_CARRIERS = tuple(name for name, carrier in CARRIERS.items() if carrier.shared_token)


def _redis_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None and urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


class FleetSettings(_Strict):
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


class CarrierSettings(_Strict):
    audiofork_sample_rate: Literal[8000, 16000, 24000, 32000, 44100, 48000, 64000] = 8000
    tokens: dict[str, SecretStr] = {}
    vonage_signature_secret: SecretStr | None = None


class LogSettings(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class SttSettings(_Strict):
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


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    gladia: GladiaSettings = GladiaSettings()
    webhook: WebhookSettings = WebhookSettings()
    twilio: TwilioSettings = TwilioSettings()
    carriers: CarrierSettings = CarrierSettings()
    log: LogSettings = LogSettings()
    stt: SttSettings = SttSettings()
    reply: ReplySettings = ReplySettings()
    tts: TtsSettings = TtsSettings()
    bot_ws: BotWsSettings = BotWsSettings()
    transcripts: TranscriptSettings = TranscriptSettings()
    parties: PartiesSettings = PartiesSettings()
    fleet: FleetSettings = FleetSettings()

    @property
    def uses_embedded_stt(self) -> bool:
        """No Gladia server configured (no URL, no key): ``bridge serve`` runs the local STT server."""
        return self.gladia.api_url is None

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        config_path: Path | None = None,
    ) -> Settings:
        """Build and validate the settings.

        Args:
            environ: the environment (``os.environ`` when None).
            overrides: dotted keys from command-line flags, e.g. ``{"server.port": 9000}``.
            config_path: a TOML settings file; else the one ``BRIDGE_CONFIG`` names; else none.

        Raises:
            ConfigError: a value is missing or invalid; the message names each bad key.
        """
        env = dict(os.environ if environ is None else environ)
        path: Path | None = config_path or (Path(env["BRIDGE_CONFIG"]) if env.get("BRIDGE_CONFIG") else None)
        data: dict[str, Any] = {}
        if path is not None:
            if not path.exists():
                raise ConfigError(f"BRIDGE_CONFIG: file not found: {path}")
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        for dotted in SECRET_KEYS:
            section, key = dotted.split(".")
            if key in data.get(section, {}):
                raise ConfigError(f"{dotted}: secrets are read from the environment only, not from {path}")
        if "tokens" in data.get("carriers", {}):
            raise ConfigError(f"carriers.tokens: secrets are read from the environment only, not from {path}")
        for carrier in TOKEN_CARRIERS:
            token = env.get(CARRIERS[carrier].token_variable)
            if token:
                data.setdefault("carriers", {}).setdefault("tokens", {})[carrier] = token
        sources: dict[str, str] = {}
        for name, dotted in ENV_KEYS.items():
            value = env.get(name)
            if not value:  # unset and empty mean the same: the file's default
                continue
            _set_dotted(data, dotted, value)
            sources[dotted] = name
        for dotted, value in (overrides or {}).items():
            if value is None:
                continue
            _set_dotted(data, dotted, value)
            sources[dotted] = "--" + dotted.split(".")[-1].replace("_", "-")
        default_profile = data.get("stt", {}).get("default")
        if isinstance(default_profile, dict):  # a partial [stt.default] changes fields, keeps the rest
            data["stt"]["default"] = deep_merge(DEFAULT_PROFILE.request_body(), default_profile)
        gladia = data.setdefault("gladia", {})
        if not gladia.get("api_url") and gladia.get("api_key"):
            gladia["api_url"] = GLADIA_CLOUD  # a key and no URL: Gladia's own service
        try:
            settings = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, sources, path)) from None
        for number in settings.stt.numbers:
            try:
                settings.stt.profile_for(number)
            except (ValidationError, ValueError) as exc:
                raise ConfigError(f"stt.numbers.{number!r}: {_first_line(exc)}") from None
        try:
            settings.stt.default.audio_format()
        except ValueError as exc:
            raise ConfigError(f"stt.default: {exc}") from None
        if settings.twilio.auth_token is not None and not settings.server.public_url:
            # A Twilio signature covers the URL Twilio called. Without a configured public URL the
            # bridge would have to trust the request's Host header, so a signature captured for any
            # other host would replay here with a spoofed Host.
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is set but BRIDGE_PUBLIC_URL is not: Twilio signatures can only "
                "be checked against the public URL Twilio calls (e.g. https://bridge.example.org)"
            )
        return settings

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for a log line: secrets only say whether they are set."""
        out = self.model_dump(mode="json", exclude={"stt"})
        for dotted in SECRET_KEYS:
            section, key = dotted.split(".")
            out[section][key] = "set" if out[section].get(key) else "unset"
        out["carriers"]["tokens"] = sorted(out["carriers"]["tokens"])  # which carriers have one, not the values
        return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".")
    data.setdefault(section, {})[key] = value


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return f"{loc}: {err['msg']}" if loc else err["msg"]
    return str(exc)


def _describe(exc: ValidationError, sources: Mapping[str, str], path: Path | None) -> str:
    lines = ["invalid settings:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        origin = sources.get(loc, str(path) if path else "the defaults")
        lines.append(f"  {loc} (from {origin}): {err['msg']}")
    return "\n".join(lines)
