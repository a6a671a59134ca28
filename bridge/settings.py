"""Settings: the only code that reads the environment and a TOML settings file.

Precedence, lowest first: the defaults held by the section models (``bridge.setting_sections``, the one
source of them; ``config/bridge.toml`` is a commented copy, checked by a test), then a TOML file when one
is named (``BRIDGE_CONFIG`` or ``--config``), then environment variables, then command-line flags.
Everything is validated once at start-up; a bad value raises :class:`~bridge.errors.ConfigError` naming
the key (and the environment variable it came from, when it did). Secrets are held as ``SecretStr`` so
they never show up in a ``repr`` or a log line. This module holds the environment-variable map, the
whole :class:`Settings` and its loader; the section models are re-exported from here.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr, ValidationError

from bridge.adapters import CARRIERS
from bridge.errors import ConfigError
from bridge.recording.settings import RecordingSettings
from bridge.setting_records import TranscriptSettings
from bridge.setting_sections import (
    DIAL_NUMBER,
    BotWsSettings,
    CarrierSettings,
    ControlSettings,
    DialNumber,
    FleetSettings,
    GladiaSettings,
    HttpUrlOrEmpty,
    LocalSttSettings,
    LogSettings,
    OutboundSettings,
    PartiesSettings,
    ReplySettings,
    ServerSettings,
    SpeakerLabels,
    StrictModel,
    SttSettings,
    TtsSettings,
    TwilioNumberSettings,
    TwilioSettings,
    WebhookSettings,
    WsUrlOrEmpty,
    speaker_labels,
)
from bridge.stt_profile import DEFAULT_PROFILE, deep_merge

__all__ = [
    "DIAL_NUMBER",
    "ENV_KEYS",
    "GLADIA_CLOUD",
    "SECRET_KEYS",
    "TOKEN_CARRIERS",
    "BotWsSettings",
    "CarrierSettings",
    "ControlSettings",
    "DialNumber",
    "FleetSettings",
    "GladiaSettings",
    "HttpUrlOrEmpty",
    "LocalSttSettings",
    "LogSettings",
    "OutboundSettings",
    "PartiesSettings",
    "RecordingSettings",
    "ReplySettings",
    "ServerSettings",
    "Settings",
    "SpeakerLabels",
    "SttSettings",
    "TranscriptSettings",
    "TtsSettings",
    "TwilioNumberSettings",
    "TwilioSettings",
    "WebhookSettings",
    "WsUrlOrEmpty",
    "speaker_labels",
]

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
    "BRIDGE_LOCAL_STT_MODEL": "local_stt.model",
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
    "BRIDGE_DATABASE_URL": "transcripts.database_url",
    "BRIDGE_REDACT": "transcripts.redact",
    "BRIDGE_REDACT_EVENTS": "transcripts.redact_events",
    "BRIDGE_RECORDINGS": "recording.enabled",
    "BRIDGE_RECORDING_FORMAT": "recording.format",
    "BRIDGE_RECORDINGS_URL": "recording.url",
    "BRIDGE_RECORDINGS_S3_ENDPOINT": "recording.s3_endpoint_url",
    "TWILIO_VOICE_MODE": "twilio.voice_mode",
    "TWILIO_FORK_REDIRECT_URL": "twilio.fork_redirect_url",
    "BRIDGE_SPEAKER_LABELS": "parties.labels",
    "BRIDGE_REDIS_URL": "fleet.redis_url",
    "BRIDGE_INSTANCE_ID": "fleet.instance_id",
    "BRIDGE_TRANSFER_TO": "control.transfer_to",
    "TWILIO_ACCOUNT_SID": "control.twilio_account_sid",
    "TWILIO_API_URL": "control.twilio_api_url",
    "SIGNALWIRE_PROJECT_ID": "control.signalwire_project_id",
    "SIGNALWIRE_API_TOKEN": "control.signalwire_api_token",
    "SIGNALWIRE_API_URL": "control.signalwire_api_url",
    "TELNYX_API_KEY": "control.telnyx_api_key",
    "TELNYX_API_URL": "control.telnyx_api_url",
    "TELNYX_PUBLIC_KEY": "control.telnyx_public_key",
    "PLIVO_AUTH_ID": "control.plivo_auth_id",
    "PLIVO_AUTH_TOKEN": "control.plivo_auth_token",
    "PLIVO_API_URL": "control.plivo_api_url",
    "VONAGE_APPLICATION_ID": "control.vonage_application_id",
    "VONAGE_PRIVATE_KEY": "control.vonage_private_key",
    "VONAGE_API_URL": "control.vonage_api_url",
    "JAMBONZ_API_URL": "control.jambonz_api_url",
    "JAMBONZ_ACCOUNT_SID": "control.jambonz_account_sid",
    "JAMBONZ_API_KEY": "control.jambonz_api_key",
    "FREESWITCH_ESL_URL": "control.freeswitch_esl_url",
    "ASTERISK_ARI_URL": "control.asterisk_ari_url",
    "ASTERISK_ARI_USER": "control.asterisk_ari_user",
    "ASTERISK_ARI_PASSWORD": "control.asterisk_ari_password",
    "BRIDGE_DIAL_TO": "outbound.dial_to",
    "BRIDGE_DIAL_FROM": "outbound.dial_from",
    "TELNYX_CONNECTION_ID": "outbound.telnyx_connection_id",
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
        "transcripts.database_url",
        "control.signalwire_api_token",
        "control.telnyx_api_key",
        "control.plivo_auth_token",
        "control.vonage_private_key",
        "control.jambonz_api_key",
        "control.freeswitch_esl_url",
        "control.asterisk_ari_password",
    }
)


# Carriers authenticated by a shared secret: <NAME>_STREAM_TOKEN in the environment.
TOKEN_CARRIERS = tuple(name for name, carrier in CARRIERS.items() if carrier.shared_token)


class Settings(StrictModel):
    server: ServerSettings = ServerSettings()
    gladia: GladiaSettings = GladiaSettings()
    webhook: WebhookSettings = WebhookSettings()
    twilio: TwilioSettings = TwilioSettings()
    carriers: CarrierSettings = CarrierSettings()
    log: LogSettings = LogSettings()
    stt: SttSettings = SttSettings()
    local_stt: LocalSttSettings = LocalSttSettings()
    reply: ReplySettings = ReplySettings()
    tts: TtsSettings = TtsSettings()
    bot_ws: BotWsSettings = BotWsSettings()
    transcripts: TranscriptSettings = TranscriptSettings()
    recording: RecordingSettings = RecordingSettings()
    parties: PartiesSettings = PartiesSettings()
    fleet: FleetSettings = FleetSettings()
    control: ControlSettings = ControlSettings()
    outbound: OutboundSettings = OutboundSettings()

    _embedded_engine: bool = PrivateAttr(default=False)  # gladia.api_url is the embedded server's

    @property
    def uses_embedded_stt(self) -> bool:
        """No Gladia server configured (no URL, no key): ``bridge serve`` runs the local STT server."""
        return self.gladia.api_url is None

    @property
    def embedded_engine(self) -> bool:
        """Speech-to-text is the embedded engine (before ``bridge serve`` starts it, or once it has): it
        does none of Gladia's add-ons."""
        return self.gladia.api_url is None or self._embedded_engine

    def with_embedded_engine(self, api_url: str) -> Settings:
        """These settings, pointed at the embedded engine ``bridge serve`` started at ``api_url``."""
        settings = self.model_copy(update={"gladia": self.gladia.model_copy(update={"api_url": api_url})})
        settings._embedded_engine = True
        return settings

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
        if settings.recording.url and not settings.transcripts.enabled:
            raise ConfigError(
                "BRIDGE_RECORDINGS_URL (recording.url) lists each recording's parts in the call record: "
                "it needs BRIDGE_TRANSCRIPTS on"
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
