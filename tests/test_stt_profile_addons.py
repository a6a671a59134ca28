"""Who may switch Gladia's add-ons on: a call only what ``stt.per_call_addons`` allows, the embedded engine
nothing (refused per call, and at ``bridge serve``'s start for a configured profile).

The oracle for the field names and shapes is the official SDK's ``LiveV2InitRequest``: a body it reads
with no unknown field and with the typed values expected is a body Gladia's API describes.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import structlog
from gladiaio_sdk.v2.live.generated_types import LiveV2InitRequest, LiveV2SummaryType, LiveV2TranslationLanguageCode

from bridge.adapters.base import CallStarted
from bridge.audio import ULAW_8K
from bridge.call.profile import call_profile
from bridge.settings import Settings
from bridge.stt import addons as messages
from bridge.stt.addons import target_languages
from bridge.stt_profile import (
    ADDON_SWITCHES,
    DEFAULT_PROFILE,
    MAX_TARGET_LANGUAGES,
    SUMMARY_TYPES,
    SttProfile,
    deep_merge,
    embedded_refusals,
    requested_addons,
    stt_overrides,
)
from tests.support.bridge_process import run_python
from tests.support.process import minimal_env

ALL = tuple(ADDON_SWITCHES)
DEFAULT_ALLOWED = Settings.load(environ={}).stt.per_call_parameters


def sdk_request(overrides: dict[str, Any]) -> LiveV2InitRequest:
    """The default profile with ``overrides``, read by the SDK; no field of it is unknown to the SDK."""
    body = deep_merge(DEFAULT_PROFILE.request_body(ULAW_8K), overrides)
    request = LiveV2InitRequest.from_dict(body)
    for part in (request, request.realtime_processing, request.post_processing):
        assert part is None or not part._unknown_fields, part
    return request


def test_the_add_on_table_is_the_one_the_messages_are_read_with() -> None:
    """The settings and the per-call rules (here) and the reading of the add-ons' messages
    (``bridge.stt.addons``) name the same add-ons, with the same switches."""
    assert messages.ADDON_SWITCHES == ADDON_SWITCHES
    assert set(ADDON_SWITCHES) == messages.REALTIME_ADDONS | messages.POST_ADDONS
    body = {
        "realtime_processing": {"translation": True, "sentiment_analysis": 1},
        "post_processing": {"summarization": True},
    }
    assert messages.requested_addons(body) == requested_addons(body) == ("translation", "summarization")


def test_the_summary_types_and_the_shortcut_names_are_gladias() -> None:
    """The summary types are the SDK's ``LiveV2SummaryType``; each add-on's switch is a field of the SDK's
    section, so a per-call shortcut writes where Gladia reads."""
    assert set(SUMMARY_TYPES) == set(typing.get_args(LiveV2SummaryType))
    for section, switch in ADDON_SWITCHES.values():
        request = LiveV2InitRequest.from_dict({section: {switch: True}})
        assert getattr(getattr(request, section), switch) is True


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        (
            "translation",
            "fr",
            {"realtime_processing": {"translation": True, "translation_config": {"target_languages": ["fr"]}}},
        ),
        (
            "translation",
            " fr, es ,de,it ",
            {
                "realtime_processing": {
                    "translation": True,
                    "translation_config": {"target_languages": ["fr", "es", "de", "it"]},
                }
            },
        ),
        ("named_entity_recognition", "true", {"realtime_processing": {"named_entity_recognition": True}}),
        ("sentiment_analysis", "TRUE", {"realtime_processing": {"sentiment_analysis": True}}),
        ("sentiment_analysis", "false", {"realtime_processing": {"sentiment_analysis": False}}),
        ("chapterization", "true", {"post_processing": {"chapterization": True}}),
        ("summarization", "true", {"post_processing": {"summarization": True}}),
        ("summarization", "false", {"post_processing": {"summarization": False}}),
        (
            "summarization",
            "bullet_points",
            {"post_processing": {"summarization": True, "summarization_config": {"type": "bullet_points"}}},
        ),
    ],
)
def test_an_allowed_shortcut_switches_its_addon(name: str, raw: str, expected: dict[str, Any]) -> None:
    """With the add-on in ``stt.per_call_addons``, ``stt.<add-on>`` gives the documented overrides, and
    the SDK reads them back with the same values."""
    overrides, refused = stt_overrides({f"stt.{name}": raw}, DEFAULT_ALLOWED, (name,))
    assert (overrides, refused) == (expected, [])
    request = sdk_request(overrides)
    section, switch = ADDON_SWITCHES[name]
    assert getattr(getattr(request, section), switch) is (raw.strip().lower() != "false")
    if name == "translation":
        assert request.realtime_processing is not None and request.realtime_processing.translation_config is not None
        langs = request.realtime_processing.translation_config.target_languages
        assert langs == [c.strip() for c in raw.split(",")]
        assert set(langs) <= set(typing.get_args(LiveV2TranslationLanguageCode))
    if raw == "bullet_points":
        assert request.post_processing is not None and request.post_processing.summarization_config is not None
        assert request.post_processing.summarization_config.type == "bullet_points"


def test_a_call_may_combine_addons_with_other_parameters() -> None:
    """Two add-ons and a language in one call: one body, each in its place, nothing refused."""
    params = {"stt.translation": "fr,es", "stt.sentiment_analysis": "true", "stt.language": "en", "From": "+1555"}
    overrides, refused = stt_overrides(params, DEFAULT_ALLOWED, ("translation", "sentiment_analysis"))
    assert refused == []
    body = deep_merge(DEFAULT_PROFILE.request_body(), overrides)
    assert requested_addons(body) == ("translation", "sentiment_analysis")
    assert target_languages(body) == ("fr", "es")
    assert body["language_config"]["languages"] == ["en"]
    sdk_request(overrides)


@pytest.mark.parametrize(
    ("name", "raw", "why"),
    [
        ("translation", "", f"not 1 to {MAX_TARGET_LANGUAGES} language codes"),
        ("translation", "fr,es,de,it,nl", f"not 1 to {MAX_TARGET_LANGUAGES} language codes"),
        ("translation", "French", f"not 1 to {MAX_TARGET_LANGUAGES} language codes"),
        ("translation", "fr," * 300, "longer than 512 characters"),
        ("named_entity_recognition", "yes", "not true or false"),
        ("chapterization", "1", "not true or false"),
        ("summarization", "short", "not true or false or one of general, bullet_points, concise"),
    ],
)
def test_a_bad_shortcut_value_is_refused_with_why(name: str, raw: str, why: str) -> None:
    """An allowed add-on with a value out of bounds is refused, with the parameter's name and why."""
    overrides, refused = stt_overrides({f"stt.{name}": raw}, DEFAULT_ALLOWED, ALL)
    assert overrides == {}
    assert len(refused) == 1 and refused[0].startswith(f"stt.{name}: {why}"), refused


@pytest.mark.parametrize("name", ALL)
def test_an_addon_not_in_per_call_addons_is_refused(name: str) -> None:
    """By default (``stt.per_call_addons`` empty) no call switches a paid add-on on; the others listed
    in ``per_call_addons`` do not let this one through."""
    others = tuple(a for a in ALL if a != name)
    for addons in ((), others):
        overrides, refused = stt_overrides(
            {f"stt.{name}": "true" if name != "translation" else "fr"}, DEFAULT_ALLOWED, addons
        )
        assert overrides == {} and refused == [f"stt.{name}: not in stt.per_call_addons"]


@pytest.mark.parametrize("name", ALL)
def test_the_embedded_engine_refuses_every_addon_request(name: str) -> None:
    """On the embedded engine an add-on is refused even when the operator allows it (and switching one
    off is refused too: it never does any)."""
    for raw in ("true", "false", "fr"):
        overrides, refused = stt_overrides({f"stt.{name}": raw}, DEFAULT_ALLOWED, ALL, embedded=True)
        assert overrides == {} and refused == [f"stt.{name}: the embedded engine does not do {name}"]


def test_a_dotted_field_that_switches_an_addon_on_needs_per_call_addons() -> None:
    """An operator who allowed ``realtime_processing.translation`` (and its config) still needs the
    add-on in ``per_call_addons``: without it the switch and its config are removed, one line says so,
    and the rest of the section and the other parameters stay."""
    allowed = (
        *DEFAULT_ALLOWED,
        "realtime_processing.translation",
        "realtime_processing.translation_config.target_languages",
        "realtime_processing.custom_spelling",
        "post_processing.summarization",
    )
    params = {
        "stt.realtime_processing.translation": "true",
        "stt.realtime_processing.translation_config.target_languages": '["fr"]',
        "stt.realtime_processing.custom_spelling": "true",
        "stt.post_processing.summarization": "true",
        "stt.endpointing": "0.2",
    }
    overrides, refused = stt_overrides(params, allowed, ("summarization",))
    assert refused == ["stt.realtime_processing.translation: not in stt.per_call_addons"]
    assert overrides == {
        "realtime_processing": {"custom_spelling": True},
        "post_processing": {"summarization": True},
        "endpointing": 0.2,
    }
    overrides, refused = stt_overrides(params, allowed, ("summarization", "translation"))
    assert refused == [] and overrides["realtime_processing"]["translation_config"] == {"target_languages": ["fr"]}
    assert requested_addons(overrides) == ("translation", "summarization")
    overrides, refused = stt_overrides(params, allowed, ALL, embedded=True)
    assert refused == [
        "stt.realtime_processing.translation: the embedded engine does not do translation",
        "stt.post_processing.summarization: the embedded engine does not do summarization",
    ]
    assert overrides == {"realtime_processing": {"custom_spelling": True}, "endpointing": 0.2}


def test_a_dotted_field_that_switches_an_addon_off_is_not_an_addon_request() -> None:
    """``false`` through an allowed dotted field asks nothing paid: taken as before."""
    overrides, refused = stt_overrides(
        {"stt.realtime_processing.translation": "false"}, ("realtime_processing.translation",)
    )
    assert (overrides, refused) == ({"realtime_processing": {"translation": False}}, [])


def test_other_parameters_are_refused_as_before() -> None:
    """The lines for parameters that are not add-ons are those of before the add-ons came."""
    params = {"stt.callback_config.url": "https://evil.example", "stt.sample_rate": "44100", "stt.language": "en"}
    overrides, refused = stt_overrides(params, DEFAULT_ALLOWED, ALL, embedded=True)
    assert overrides == {"language_config": {"languages": ["en"]}}
    assert refused == [
        "stt.callback_config.url: not in stt.per_call_parameters",
        "stt.sample_rate: not 8000 or 16000 (other rates only in the configured profiles)",
    ]


def test_embedded_refusals_name_each_configured_key() -> None:
    """Each add-on switched on in ``[stt.default]`` or a number's table is one line naming its key; one
    switched off, or a profile with none, gives nothing."""
    default = SttProfile.model_validate(
        deep_merge(
            DEFAULT_PROFILE.request_body(), {"realtime_processing": {"translation": True, "custom_vocabulary": False}}
        )
    )
    numbers: dict[str, dict[str, Any]] = {
        "+15550100": {"post_processing": {"summarization": True, "chapterization": False}},
        "+15550101": {"language_config": {"languages": ["fr"]}},
    }
    tail = "; set GLADIA_API_KEY (and GLADIA_API_URL) to use Gladia's"
    assert embedded_refusals(default, numbers) == [
        "stt.default.realtime_processing.translation: the embedded engine does not do translation" + tail,
        "stt.numbers.'+15550100'.post_processing.summarization: the embedded engine does not do summarization" + tail,
    ]
    assert embedded_refusals(DEFAULT_PROFILE, {"+15550101": numbers["+15550101"]}) == []


def started_with(parameters: dict[str, str]) -> CallStarted:
    return CallStarted("twilio", "CA" + "1" * 32, "MZ" + "1" * 32, None, parameters, ULAW_8K, called="+15550100")


def test_call_profile_returns_the_refused_lines_it_logs_once() -> None:
    """On the embedded engine a call's add-on request is refused: the profile has no add-on, and the
    refused lines are returned and logged once, as one ``call.stt_parameters_refused`` line."""
    settings = Settings.load(environ={}, overrides={"stt.per_call_addons": ["translation"]})
    assert settings.uses_embedded_stt
    started = started_with({"stt.translation": "fr", "stt.summarization": "true", "stt.language": "fr"})
    with structlog.testing.capture_logs() as logs:
        profile, refused = call_profile(settings, started)
    assert refused == (
        "stt.translation: the embedded engine does not do translation",
        "stt.summarization: the embedded engine does not do summarization",
    )
    assert requested_addons(profile.request_body()) == ()
    assert profile.request_body()["language_config"]["languages"] == ["fr"]
    lines = [e for e in logs if e["event"] == "call.stt_parameters_refused"]
    assert len(lines) == 1 and lines[0]["refused"] == list(refused) and lines[0]["count"] == 2


def test_call_profile_with_gladia_takes_an_allowed_addon() -> None:
    """With a Gladia server configured, an add-on in ``per_call_addons`` reaches the profile; one not
    in it is refused; a call without ``stt.*`` parameters has nothing refused."""
    settings = Settings.load(
        environ={"GLADIA_API_KEY": "k"}, overrides={"stt.per_call_addons": ["translation", "sentiment_analysis"]}
    )
    started = started_with({"stt.translation": "fr,de", "stt.named_entity_recognition": "true"})
    with structlog.testing.capture_logs():
        profile, refused = call_profile(settings, started)
    assert refused == ("stt.named_entity_recognition: not in stt.per_call_addons",)
    body = profile.request_body()
    assert requested_addons(body) == ("translation",) and target_languages(body) == ("fr", "de")
    assert call_profile(settings, started_with({}))[1] == ()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("[stt.default.realtime_processing]\ntranslation = true\n", "stt.default.realtime_processing.translation"),
        (
            '[stt.numbers."+15550100".post_processing]\nsummarization = true\n',
            "stt.numbers.'+15550100'.post_processing.summarization",
        ),
    ],
)
async def test_serve_on_the_embedded_engine_refuses_a_profile_with_an_addon(
    tmp_path: Path, table: str, key: str
) -> None:
    """``bridge serve`` with no Gladia settings and a configured add-on exits 2 with one line naming the
    key, before anything else: on an install without the local engine too (it never needs the model)."""
    config = tmp_path / "bridge.toml"
    config.write_text(table)
    code = (
        "import sys; sys.modules['faster_whisper'] = None; from bridge.cli import main; "
        f"sys.exit(main(['serve', '--config', {str(config)!r}]))"
    )
    done = await run_python("-c", code, env=minimal_env(BRIDGE_DATA_DIR=str(tmp_path / "data")), timeout=30)
    lines = done.err.decode().strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.err.decode()
    assert lines[0].startswith(f"bridge: {key}: the embedded engine does not do "), lines[0]
    assert "GLADIA_API_KEY" in lines[0] and not done.out
