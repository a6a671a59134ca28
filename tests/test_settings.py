"""Settings: file < environment < flags, validation errors that name the key, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.settings import SECRET_KEYS, Settings


def test_defaults_come_from_the_models() -> None:
    """No file needed: the models hold every default (an installed, non-editable bridge runs the same
    defaults as the repository and the image)."""
    s = Settings.load(environ={})
    assert s.server.port == 8080 and s.server.host == "0.0.0.0"
    assert s.gladia.api_url is None and s.uses_embedded_stt  # no key, no URL: the local STT server
    assert Settings.load(environ={"GLADIA_API_KEY": "k"}).gladia.api_url == "https://api.gladia.io"
    assert s.stt.default.encoding == "native"
    assert s.stt.default.request_body()["endpointing"] == 0.3
    assert s.stt.default.request_body()["language_config"] == {"languages": ["en"], "code_switching": False}
    from bridge.audio import ULAW_8K, AudioFormat

    assert s.stt.default.audio_format(ULAW_8K) == ULAW_8K
    assert s.stt.default.audio_format(AudioFormat("pcm16", 24000)) == AudioFormat("pcm16", 16000)


def test_the_toml_file_is_a_commented_copy_of_the_defaults() -> None:
    """config/bridge.toml says what the models hold: read as settings it gives exactly Settings(), and
    every setting is in it (as a key, or commented out where the default is no value or a secret)."""
    path = Path(__file__).resolve().parent.parent / "config" / "bridge.toml"
    assert Settings.load(environ={}, config_path=path) == Settings.load(environ={})
    text = path.read_text()
    for section in Settings.model_fields:
        for field in type(getattr(Settings(), section)).model_fields:
            if f"{section}.{field}" in SECRET_KEYS or field in ("tokens", "numbers"):
                continue  # secrets (environment only) and per-number tables: described in comments
            present = f"\n{field} =" in text or f"# {field} =" in text or f"[{section}.{field}]" in text
            assert present, f"{section}.{field} is not in config/bridge.toml"


def test_environment_overrides_file_and_flags_override_environment() -> None:
    env = {"BRIDGE_PORT": "9001", "GLADIA_API_URL": "http://127.0.0.1:1/", "BOT_WEBHOOK_URL": "http://127.0.0.1:2/h"}
    s = Settings.load(environ=env, overrides={"server.port": 9002})
    assert s.server.port == 9002
    assert s.gladia.api_url == "http://127.0.0.1:1"
    assert not s.uses_embedded_stt
    assert s.webhook.url == "http://127.0.0.1:2/h"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"BRIDGE_PORT": "eighty"}, ["server.port", "BRIDGE_PORT"]),
        ({"BRIDGE_PORT": "70000"}, ["server.port"]),
        ({"GLADIA_API_URL": "ftp://x"}, ["gladia.api_url", "GLADIA_API_URL"]),
        ({"BOT_WEBHOOK_URL": "not a url"}, ["webhook.url", "BOT_WEBHOOK_URL"]),
        ({"BOT_WEBHOOK_SECRET": "whsec_!!!"}, ["webhook.secret", "BOT_WEBHOOK_SECRET"]),
        ({"BRIDGE_LOG_LEVEL": "loud"}, ["log.level"]),
        ({"BRIDGE_PUBLIC_URL": "bridge.example.org"}, ["server.public_url"]),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.load(environ=env)
    for name in names:
        assert name in str(err.value)


def test_bad_values_in_a_file_name_the_key_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[gladia]\nchunk_ms = 0\n[stt.default]\nencoding = "wav/pcm"\nsample_rate = 22050\nbit_depth = 16\n')
    with pytest.raises(ConfigError, match=r"gladia.chunk_ms \(from .*bridge.toml\)"):
        Settings.load(environ={"BRIDGE_CONFIG": str(cfg)})
    cfg.write_text('[stt.default]\nencoding = "wav/pcm"\nsample_rate = 22050\nbit_depth = 16\n')
    with pytest.raises(ConfigError, match=r"stt\.default: wav/pcm is supported at bit_depth 16"):
        Settings.load(environ={"BRIDGE_CONFIG": str(cfg)})
    cfg.write_text('[stt.numbers."+331".language_config]\nlanguages = "fr"\n[stt.numbers."+332"]\nencoding = "mp3"\n')
    with pytest.raises(ConfigError, match=r"stt.numbers.'\+332': encoding"):
        Settings.load(environ={"BRIDGE_CONFIG": str(cfg)})


def test_secrets_are_refused_in_files(tmp_path: Path) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[gladia]\napi_key = "abc"\n')
    with pytest.raises(ConfigError, match=r"gladia\.api_key: secrets are read from the environment only"):
        Settings.load(environ={"BRIDGE_CONFIG": str(cfg)})


def test_missing_config_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match="BRIDGE_CONFIG: file not found"):
        Settings.load(environ={"BRIDGE_CONFIG": "/nonexistent/bridge.toml"})


def test_secrets_never_show_in_repr_or_redacted_dump() -> None:
    s = Settings.load(
        environ={
            "GLADIA_API_KEY": "gk-very-secret",
            "TWILIO_AUTH_TOKEN": "tw-very-secret",
            "BOT_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "BRIDGE_SECRET": "br-very-secret",
            "BRIDGE_PUBLIC_URL": "https://bridge.example.org",
        }
    )
    for text in (repr(s), str(s.redacted())):
        assert "very-secret" not in text and "MfKQ9r8" not in text
    assert s.redacted()["gladia"]["api_key"] == "set"
    assert s.redacted()["webhook"]["secret"] == "set" and s.redacted()["server"]["secret"] == "set"


def test_twilio_signatures_need_the_public_url() -> None:
    """Attack: with BRIDGE_PUBLIC_URL unset, signatures were checked against the request's Host, so a
    signature captured for another host replayed here with a spoofed Host. Now that is a start-up
    error naming both settings."""
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN is set but BRIDGE_PUBLIC_URL is not"):
        Settings.load(environ={"TWILIO_AUTH_TOKEN": "tw"})


def test_profiles_merge_default_number_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(
        Path("config/bridge.toml").read_text() + '\n[stt.numbers."+33100".language_config]\nlanguages = ["fr"]\n'
    )
    s = Settings.load(environ={"BRIDGE_CONFIG": str(cfg)})
    fr = s.stt.profile_for("+33100")
    assert fr.request_body()["language_config"] == {"languages": ["fr"], "code_switching": False}
    pcm = s.stt.profile_for("+33100", {"encoding": "wav/pcm", "bit_depth": 16, "sample_rate": 16000})
    fmt = pcm.audio_format()
    assert fmt is not None and fmt.bytes_per_second == 32000
    assert s.stt.profile_for("+1999").request_body()["language_config"]["languages"] == ["en"]


def test_a_copy_of_the_default_file_still_allows_the_embedded_stt(tmp_path: Path) -> None:
    """Only a Gladia URL or key (environment, flag, or a value in a file) turns the embedded local STT
    off: a copied config/bridge.toml (as in the Docker image) does not."""
    copy = tmp_path / "bridge.toml"
    copy.write_text(Path("config/bridge.toml").read_text())
    assert Settings.load(environ={"BRIDGE_CONFIG": str(copy)}).uses_embedded_stt
    assert not Settings.load(
        environ={"BRIDGE_CONFIG": str(copy), "GLADIA_API_URL": "https://api.gladia.io"}
    ).uses_embedded_stt
    copy.write_text('[gladia]\napi_url = "http://127.0.0.1:9"\n')
    assert not Settings.load(environ={"BRIDGE_CONFIG": str(copy)}).uses_embedded_stt


def test_a_partial_default_profile_keeps_the_other_defaults(tmp_path: Path) -> None:
    """A file that sets one field of [stt.default] changes that field only."""
    cfg = tmp_path / "bridge.toml"
    cfg.write_text("[stt.default]\nendpointing = 0.5\n")
    body = Settings.load(environ={"BRIDGE_CONFIG": str(cfg)}).stt.default.request_body()
    assert body["endpointing"] == 0.5 and body["language_config"]["languages"] == ["en"]


def test_the_example_environment_names_every_variable() -> None:
    """config/example.env lists every environment variable the settings read."""
    from bridge.settings import ENV_KEYS, TOKEN_CARRIERS

    text = (Path(__file__).resolve().parent.parent / "config" / "example.env").read_text()
    names = set(ENV_KEYS) | {f"{c.upper()}_STREAM_TOKEN" for c in TOKEN_CARRIERS}
    missing = sorted(n for n in names if f"\n{n}=" not in text)
    assert not missing, f"not in config/example.env: {missing}"


def test_a_carriers_own_lead_is_checked_by_name(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text("[reply]\nlead_ms_by_carrier = { exotel = 400.0 }\n")
    assert Settings.load(environ={}, config_path=path).reply.lead_ms_by_carrier == {"exotel": 400.0}
    path.write_text("[reply]\nlead_ms_by_carrier = { twillio = 400.0 }\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(environ={}, config_path=path)
    assert "reply.lead_ms_by_carrier" in str(err.value) and "'twillio' is not a carrier" in str(err.value)


def test_per_call_addons_are_checked_by_name(tmp_path: Path) -> None:
    """``stt.per_call_addons`` is empty by default (no call switches a paid add-on on); it takes the
    names of Gladia's add-ons, and an unknown one is a start-up error naming the key and the name."""
    assert Settings.load(environ={}).stt.per_call_addons == ()
    path = tmp_path / "bridge.toml"
    path.write_text('[stt]\nper_call_addons = ["translation", "summarization"]\n')
    assert Settings.load(environ={}, config_path=path).stt.per_call_addons == ("translation", "summarization")
    path.write_text('[stt]\nper_call_addons = ["translation", "translate"]\n')
    with pytest.raises(ConfigError) as err:
        Settings.load(environ={}, config_path=path)
    assert "stt.per_call_addons" in str(err.value) and "'translate' is not an add-on" in str(err.value)


@pytest.mark.parametrize(("value", "ok"), [(120.0, True), (0.5, True), (3600, True), (0, False), (3601, False)])
def test_analysis_timeout_is_bounded(tmp_path: Path, value: float, ok: bool) -> None:
    """``stt.analysis_timeout`` (120 s by default): more than 0, at most an hour; else named at start-up."""
    assert Settings.load(environ={}).stt.analysis_timeout == 120.0
    path = tmp_path / "bridge.toml"
    path.write_text(f"[stt]\nanalysis_timeout = {value}\n")
    if ok:
        assert Settings.load(environ={}, config_path=path).stt.analysis_timeout == value
    else:
        with pytest.raises(ConfigError, match=r"stt\.analysis_timeout"):
            Settings.load(environ={}, config_path=path)


def test_the_local_engines_model_is_tiny_en_unless_base_is_chosen(tmp_path: Path) -> None:
    """``local_stt.model``: tiny.en by default; base from the file or BRIDGE_LOCAL_STT_MODEL (which wins)."""
    assert Settings.load(environ={}).local_stt.model == "tiny.en"
    assert Settings.load(environ={"BRIDGE_LOCAL_STT_MODEL": "base"}).local_stt.model == "base"
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[local_stt]\nmodel = "base"\n')
    assert Settings.load(environ={"BRIDGE_CONFIG": str(cfg)}).local_stt.model == "base"
    env = {"BRIDGE_CONFIG": str(cfg), "BRIDGE_LOCAL_STT_MODEL": "tiny.en"}
    assert Settings.load(environ=env).local_stt.model == "tiny.en"


@pytest.mark.parametrize("where", ["environment", "file"])
def test_a_model_the_local_engine_does_not_have_is_refused_naming_the_key(tmp_path: Path, where: str) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[local_stt]\nmodel = "small"\n')
    environ = {"BRIDGE_LOCAL_STT_MODEL": "small"} if where == "environment" else {"BRIDGE_CONFIG": str(cfg)}
    with pytest.raises(ConfigError) as err:
        Settings.load(environ=environ)
    origin = "BRIDGE_LOCAL_STT_MODEL" if where == "environment" else str(cfg)
    assert f"local_stt.model (from {origin})" in str(err.value)
    assert "'tiny.en' or 'base'" in str(err.value)
