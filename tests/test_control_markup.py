"""Transfer markup for each carrier, checked against independent oracles: the twilio SDK's
``VoiceResponse`` and the plivo SDK's ``plivoxml`` builders (element trees compared: tag, attributes,
text), the vonage_voice SDK's NCCO models as it serialises them, and jambonz's own verb schemas (the
facts relied on copied below from jambonz/verb-specifications, validated the way its validator does).
Also the allow-list (a table of allowed and refused destinations, hostile ones included) and each
carrier's dial results."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from plivo import plivoxml
from twilio.twiml.voice_response import VoiceResponse
from vonage_voice import Connect, OnAnswer, PhoneEndpoint, SipEndpoint, Stream, WebsocketEndpoint

from bridge.control.allow import destination, transfer_allowed
from bridge.control.dial_status import (
    jambonz_outcome,
    plivo_outcome,
    telnyx_outcome,
    twilio_outcome,
    vonage_outcome,
)
from bridge.control.jambonz_verbs import announce_verbs, dial_verbs, return_verbs
from bridge.control.ncco import announce_ncco, can_announce, return_ncco, transfer_ncco
from bridge.control.plivo_xml import announce_xml, dial_xml, extra_headers_value, hangup_xml, return_xml
from bridge.control.twiml import announce_twiml, dial_twiml, hangup_twiml, redirect_twiml, return_twiml

NUMBER = "+15550142"
SIP = "sip:agent@pbx.example.com;transport=tls"
ACTION = "https://bridge.example/twilio/dial-status?t=abc.def&x=1"
ANNOUNCE = "https://bridge.example/twilio/announce?t=a_b-c.d"
ANSWERED = "https://bridge.example/twilio/answered?t=q"
HOSTILE = "a\"b'c<d>e&f\ng"


def tree(xml: str) -> tuple[Any, ...]:
    def walk(e: ET.Element) -> tuple[Any, ...]:
        return (e.tag, dict(e.attrib), (e.text or "").strip(), tuple(walk(c) for c in e))

    return walk(ET.fromstring(xml.encode()))


def twilio_sdk(build: Any) -> tuple[Any, ...]:
    response = VoiceResponse()
    build(response)
    return tree(response.to_xml())


# --- TwiML (Twilio, SignalWire cXML, Telnyx TeXML) ---------------------------------------------------


@pytest.mark.parametrize("to", [NUMBER, SIP])
@pytest.mark.parametrize("announce", [None, ANNOUNCE])
@pytest.mark.parametrize("answered", [None, ANSWERED])
@pytest.mark.parametrize("caller_id", [None, "+15550002"])
def test_dial_twiml_matches_the_twilio_sdk(
    to: str, announce: str | None, answered: str | None, caller_id: str | None
) -> None:
    ours = dial_twiml(
        to, caller_id=caller_id, ring_timeout_s=30, action_url=ACTION, announce_url=announce, answered_url=answered
    )
    assert ours.startswith('<?xml version="1.0" encoding="UTF-8"?>')

    def build(r: VoiceResponse) -> None:
        dial = r.dial(action=ACTION, method="POST", timeout=30, answer_on_bridge=True, caller_id=caller_id)
        noun: dict[str, Any] = {}
        if announce:
            noun.update(url=announce, method="POST")
        if answered:
            noun.update(status_callback_event="answered", status_callback=answered, status_callback_method="POST")
        if to.startswith("sip:"):
            dial.sip(to, **noun)
        else:
            dial.number(to, **noun)

    assert tree(ours) == twilio_sdk(build)


def test_dial_twiml_escapes_hostile_values_like_the_sdk() -> None:
    url = "https://x.example/?a=1&b=" + HOSTILE
    ours = dial_twiml(NUMBER, caller_id=HOSTILE, ring_timeout_s=20, action_url=url, announce_url=url, answered_url=url)

    def build(r: VoiceResponse) -> None:
        dial = r.dial(action=url, method="POST", timeout=20, answer_on_bridge=True, caller_id=HOSTILE)
        dial.number(
            NUMBER,
            url=url,
            method="POST",
            status_callback_event="answered",
            status_callback=url,
            status_callback_method="POST",
        )

    assert tree(ours) == twilio_sdk(build)


def test_sip_uri_text_with_markup_characters_stays_text() -> None:
    to = "sip:a&b@pbx.example.com"
    ours = dial_twiml(to, caller_id=None, ring_timeout_s=20, action_url=ACTION, announce_url=None, answered_url=None)
    assert tree(ours) == twilio_sdk(
        lambda r: r.dial(action=ACTION, method="POST", timeout=20, answer_on_bridge=True).sip(to)
    )


def test_what_xml_cannot_carry_is_dropped_and_the_document_stays_well_formed() -> None:
    bad = "https://x.example/\x00\x01\x0b\ufffe?a=\ud800b"
    for doc in (
        dial_twiml(NUMBER, caller_id="+1\x07555", ring_timeout_s=5, action_url=bad, announce_url=bad, answered_url=bad),
        announce_twiml(bad),
        redirect_twiml(bad),
        return_twiml(bad, {"k\x00": "v\x1f"}, bad),
        dial_xml(NUMBER, caller_id="\x02", ring_timeout_s=5, action_url=bad, confirm_sound_url=bad),
        announce_xml(bad),
        return_xml(bad, extra_headers={}, content_type="audio/x-mulaw;rate=8000", after_url=bad),
    ):
        parsed = ET.fromstring(doc.encode("utf-8"))
        assert "https://x.example/?a=b" in ET.tostring(parsed, encoding="unicode")


@pytest.mark.parametrize(
    "to", ["15550142", "+1 555 0142", "tel:+15550142", "sip:a@evil.org@pbx.example.com", "", "<x/>"]
)
def test_dial_refuses_what_is_neither_a_number_nor_a_sip_uri(to: str) -> None:
    with pytest.raises(ValueError, match="to="):
        dial_twiml(to, caller_id=None, ring_timeout_s=5, action_url=ACTION, announce_url=None, answered_url=None)
    with pytest.raises(ValueError):
        dial_xml(to, caller_id=None, ring_timeout_s=5, action_url=ACTION, confirm_sound_url=None)
    with pytest.raises(ValueError):
        dial_verbs(to, caller_id=None, ring_timeout_s=5, action_hook=ACTION, confirm_hook=None)
    with pytest.raises(ValueError):
        transfer_ncco(to, from_number=None, ring_timeout_s=5, event_url=ACTION, announce_url=None)


def test_announce_twiml_matches_the_sdk() -> None:
    assert tree(announce_twiml(ANNOUNCE)) == twilio_sdk(lambda r: r.play(ANNOUNCE))


def test_return_twiml_matches_the_sdk() -> None:
    params = {"From": "+15550001", "bridge.resume": "tok.en-_x", "odd": HOSTILE}
    ours = return_twiml("wss://bridge.example/twilio/stream", params, ACTION)

    def build(r: VoiceResponse) -> None:
        stream = r.connect(action=ACTION).stream(url="wss://bridge.example/twilio/stream")
        for name, value in params.items():
            stream.parameter(name=name, value=value)

    assert tree(ours) == twilio_sdk(build)


def test_return_twiml_keeps_each_parameter_under_500_characters() -> None:
    ours = return_twiml("wss://b.example/s", {"name": "v" * 1000}, ACTION)
    (param,) = ET.fromstring(ours.encode()).iter("Parameter")
    assert len(param.get("name", "")) + len(param.get("value", "")) < 500
    assert param.get("value", "").startswith("vvvv")


def test_hangup_and_redirect_match_the_sdk() -> None:
    assert tree(hangup_twiml()) == twilio_sdk(lambda r: r.hangup())
    url = "https://operator.example/after?x=1&y=2"
    assert tree(redirect_twiml(url)) == twilio_sdk(lambda r: r.redirect(url))


# --- Plivo XML ---------------------------------------------------------------------------------------


def plivo_sdk(*elements: Any) -> tuple[Any, ...]:
    response = plivoxml.ResponseElement()
    for element in elements:
        response.add(element)
    return tree(response.to_string(pretty=False))


@pytest.mark.parametrize("to", [NUMBER, SIP])
@pytest.mark.parametrize("confirm", [None, ANNOUNCE])
@pytest.mark.parametrize("caller_id", [None, "+15550002"])
def test_plivo_dial_matches_the_sdk(to: str, confirm: str | None, caller_id: str | None) -> None:
    ours = dial_xml(to, caller_id=caller_id, ring_timeout_s=25, action_url=ACTION, confirm_sound_url=confirm)
    dial = plivoxml.DialElement(action=ACTION, method="POST", timeout=25, caller_id=caller_id, confirm_sound=confirm)
    dial.add(plivoxml.UserElement(to) if to.startswith("sip:") else plivoxml.NumberElement(to))
    assert tree(ours) == plivo_sdk(dial)


def test_plivo_announce_and_hangup_match_the_sdk() -> None:
    assert tree(announce_xml(ANNOUNCE)) == plivo_sdk(plivoxml.PlayElement(ANNOUNCE))
    assert tree(hangup_xml()) == plivo_sdk(plivoxml.HangupElement())


def test_plivo_return_matches_the_sdk() -> None:
    url, after = "wss://bridge.example/plivo/stream?token=a.b", "https://bridge.example/plivo/after?t=1&u=2"
    headers = {"callid": "abc123", "resume": "Zz09"}
    ours = return_xml(url, extra_headers=headers, content_type="audio/x-l16;rate=16000", after_url=after)
    stream = plivoxml.StreamElement(
        url,
        bidirectional=True,
        keepCallAlive=True,
        contentType="audio/x-l16;rate=16000",
        extraHeaders="callid=abc123,resume=Zz09",  # Plivo's documented form: test1=12,test2=123
    )
    assert tree(ours) == plivo_sdk(stream, plivoxml.RedirectElement(after))


def test_plivo_return_without_headers_has_no_extra_headers_attribute() -> None:
    ours = return_xml("wss://b.example/s", extra_headers={}, content_type="audio/x-mulaw;rate=8000", after_url=ACTION)
    stream = plivoxml.StreamElement(
        "wss://b.example/s", bidirectional=True, keepCallAlive=True, contentType="audio/x-mulaw;rate=8000"
    )
    assert tree(ours) == plivo_sdk(stream, plivoxml.RedirectElement(ACTION))


@pytest.mark.parametrize(
    "headers", [{"bridge.resume": "x"}, {"k": "a=b"}, {"k": "a,b"}, {"k": ""}, {"": "v"}, {"k": "é"}, {"k": "x" * 600}]
)
def test_plivo_extra_headers_outside_the_documented_rules_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        extra_headers_value(headers)
    with pytest.raises(ValueError):
        return_xml("wss://b.example/s", extra_headers=headers, content_type="audio/x-mulaw;rate=8000", after_url=ACTION)


# --- Vonage NCCO -------------------------------------------------------------------------------------


def wire(actions: Any) -> Any:
    """What goes on the wire: the SDK's ``model_dump(by_alias=True, exclude_none=True)`` as JSON."""
    return json.loads(json.dumps([a.model_dump(by_alias=True, exclude_none=True) for a in actions]))


def test_vonage_transfer_to_a_phone_with_a_briefing_matches_the_sdk() -> None:
    ours = transfer_ncco(NUMBER, from_number="+15550002", ring_timeout_s=30, event_url=ACTION, announce_url=ANNOUNCE)
    sdk = Connect(
        endpoint=[PhoneEndpoint(number="15550142", onAnswer=OnAnswer(url=ANNOUNCE))],
        from_="15550002",
        eventType="synchronous",
        eventUrl=[ACTION],
        timeout=30,
    )
    assert json.loads(json.dumps(ours)) == wire([sdk])


def test_vonage_transfer_to_sip_matches_the_sdk() -> None:
    ours = transfer_ncco(SIP, from_number="+15550002", ring_timeout_s=20, event_url=ACTION, announce_url=None)
    sdk = Connect(
        endpoint=[SipEndpoint(uri=SIP)], from_="15550002", eventType="synchronous", eventUrl=[ACTION], timeout=20
    )
    assert json.loads(json.dumps(ours)) == wire([sdk])


def test_vonage_without_a_caller_id_uses_a_random_number_of_the_application() -> None:
    ours = transfer_ncco(NUMBER, from_number=None, ring_timeout_s=20, event_url=ACTION, announce_url=None)
    sdk = Connect(
        endpoint=[PhoneEndpoint(number="15550142")],
        randomFromNumber=True,
        eventType="synchronous",
        eventUrl=[ACTION],
        timeout=20,
    )
    assert json.loads(json.dumps(ours)) == wire([sdk])


def test_vonage_refuses_a_briefing_it_does_not_document() -> None:
    assert can_announce(NUMBER) and not can_announce(SIP)
    with pytest.raises(ValueError, match="SIP"):
        transfer_ncco(SIP, from_number=None, ring_timeout_s=20, event_url=ACTION, announce_url=ANNOUNCE)


def test_vonage_announce_and_return_match_the_sdk() -> None:
    assert json.loads(json.dumps(announce_ncco(ANNOUNCE))) == wire([Stream(streamUrl=[ANNOUNCE])])
    headers = {"call_id": "CA1", "bridge.resume": "t.k"}
    ours = return_ncco("wss://bridge.example/vonage/stream", content_type="audio/l16;rate=16000", headers=headers)
    endpoint = WebsocketEndpoint(
        uri="wss://bridge.example/vonage/stream", contentType="audio/l16;rate=16000", headers=headers
    )
    # The SDK insists on from or randomFromNumber; a websocket connect needs neither on the wire.
    (expected,) = wire([Connect(endpoint=[endpoint], randomFromNumber=False)])
    del expected["randomFromNumber"]
    assert json.loads(json.dumps(ours)) == [expected]
    with_from = return_ncco(
        "wss://b.example/s", content_type="audio/l16;rate=8000", headers={}, from_number="+15550002"
    )
    sdk = Connect(
        endpoint=[WebsocketEndpoint(uri="wss://b.example/s", contentType="audio/l16;rate=8000", headers={})],
        from_="15550002",
    )
    assert json.loads(json.dumps(with_from)) == wire([sdk])


# --- jambonz verbs -----------------------------------------------------------------------------------

# Copied from jambonz/verb-specifications@1b1452d19533d14b3da08d3b758a864edfb6c4b7 specs.json (the
# verbs and types used here, whole), and validated as its jambonz-app-json-validation.js validateVerb
# does: every property known with the right JS type, nested "#type" references checked, required ones
# present, anything else an error.
SPECS: dict[str, dict[str, Any]] = {
    "dial": {
        "properties": {
            "id": "string",
            "actionHook": "object|string",
            "onHoldHook": "object|string",
            "answerOnBridge": "boolean",
            "callerId": "string",
            "callerName": "string",
            "confirmHook": "object|string",
            "referHook": "object|string",
            "dialMusic": "string",
            "dtmfCapture": "object",
            "dtmfHook": "object|string",
            "headers": "object",
            "anchorMedia": "boolean",
            "exitMediaPath": "boolean",
            "boostAudioSignal": "number|string",
            "listen": "#listen",
            "stream": "#listen",
            "target": ["#target"],
            "timeLimit": "number",
            "timeout": "number",
            "proxy": "string",
            "transcribe": "#transcribe",
            "amd": "#amd",
            "dub": ["#dub"],
            "tag": "object",
            "forwardPAI": "boolean",
            "srtpEncryption": {"type": "string", "enum": ["sdes", "dtls"]},
        },
        "required": ["target"],
    },
    "target": {
        "properties": {
            "type": {"type": "string", "enum": ["phone", "sip", "user", "teams"]},
            "confirmHook": "object|string",
            "method": {"type": "string", "enum": ["GET", "POST"]},
            "headers": "object",
            "from": "#dialFrom",
            "name": "string",
            "number": "string",
            "sipUri": "string",
            "auth": "#auth",
            "vmail": "boolean",
            "tenant": "string",
            "trunk": "string",
            "overrideTo": "string",
            "proxy": "string",
        },
        "required": ["type"],
    },
    "listen": {
        "properties": {
            "id": "string",
            "actionHook": "object|string",
            "auth": "#auth",
            "finishOnKey": "string",
            "maxLength": "number",
            "metadata": "object",
            "mixType": {"type": "string", "enum": ["mono", "stereo", "mixed"]},
            "passDtmf": "boolean",
            "playBeep": "boolean",
            "disableBidirectionalAudio": "boolean",
            "bidirectionalAudio": "#bidirectionalAudio",
            "sampleRate": "number",
            "timeout": "number",
            "transcribe": "#transcribe",
            "url": "string",
            "wsAuth": "#auth",
            "earlyMedia": "boolean",
            "channel": "number",
        },
        "required": ["url"],
    },
    "play": {
        "properties": {
            "id": "string",
            "url": "string|array",
            "loop": "number|string",
            "earlyMedia": "boolean",
            "seekOffset": "number|string",
            "timeoutSecs": "number|string",
            "actionHook": "object|string",
        },
        "required": ["url"],
    },
}


def js_typeof(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"  # dicts, lists and null are all "object" to JS's typeof


def validate_verb(name: str, data: dict[str, Any]) -> None:
    spec = SPECS[name]
    required = list(spec.get("required", []))
    for key, value in data.items():
        assert key in spec["properties"], f"{name}: unknown property {key}"
        want = spec["properties"][key]
        if isinstance(want, str) and "|" in want:
            types = want.split("|")
            assert js_typeof(value) in types or ("array" in types and isinstance(value, list)), (name, key)
        elif isinstance(want, str) and want in ("number", "string", "object", "boolean"):
            assert js_typeof(value) == want, (name, key)
        elif isinstance(want, list):
            for item in value:
                validate_verb(want[0][1:], item)
        elif isinstance(want, dict):
            assert value in want["enum"], (name, key, value)
        else:
            validate_verb(want[1:], value)
        required = [r for r in required if r != key]
    assert not required, f"{name}: missing {required}"


def validate(verbs: list[dict[str, Any]]) -> None:
    json.dumps(verbs)  # JSON-able
    for verb in verbs:
        body = {k: v for k, v in verb.items() if k != "verb"}
        validate_verb(verb["verb"], body)


def test_jambonz_validator_rejects_what_jambonz_rejects() -> None:
    with pytest.raises(AssertionError):
        validate([{"verb": "dial", "target": [{"type": "phone", "number": NUMBER}], "timeout": "30"}])
    with pytest.raises(AssertionError):
        validate([{"verb": "dial", "target": [{"type": "pstn", "number": NUMBER}]}])
    with pytest.raises(AssertionError):
        validate([{"verb": "listen", "url": "wss://x", "bogus": 1}])
    with pytest.raises(AssertionError):
        validate([{"verb": "dial"}])


@pytest.mark.parametrize("to", [NUMBER, SIP])
@pytest.mark.parametrize("confirm", [None, "/jambonz/announce?t=x"])
@pytest.mark.parametrize("caller_id", [None, "+15550002"])
def test_jambonz_dial_is_valid_and_says_what_was_asked(to: str, confirm: str | None, caller_id: str | None) -> None:
    verbs = dial_verbs(
        to, caller_id=caller_id, ring_timeout_s=30, action_hook="/jambonz/dial-status", confirm_hook=confirm
    )
    validate(verbs)
    (dial,) = verbs
    assert dial["verb"] == "dial" and dial["timeout"] == 30 and dial["answerOnBridge"] is True
    assert dial["actionHook"] == "/jambonz/dial-status"
    assert dial.get("confirmHook") == confirm and dial.get("callerId") == caller_id
    expected = {"type": "sip", "sipUri": to} if to.startswith("sip:") else {"type": "phone", "number": to}
    assert dial["target"] == [expected]


def test_jambonz_announce_is_a_valid_play() -> None:
    verbs = announce_verbs(ANNOUNCE)
    validate(verbs)
    assert verbs == [{"verb": "play", "url": ANNOUNCE}]


@pytest.mark.parametrize("hook", [None, "/jambonz/after-stream"])
def test_jambonz_return_is_a_listen_the_bridge_reads(hook: str | None) -> None:
    verbs = return_verbs(
        "wss://bridge.example/audiofork/stream", metadata={"bridge.resume": "t"}, sample_rate=16000, action_hook=hook
    )
    validate(verbs)
    (listen,) = verbs
    assert listen["url"] == "wss://bridge.example/audiofork/stream"
    assert listen["sampleRate"] == 16000 and listen["mixType"] == "mono"
    assert listen["metadata"] == {"bridge.resume": "t"}
    assert listen["passDtmf"] is True  # the bridge reads keys from {"event": "dtmf"} frames
    assert listen.get("actionHook") == hook
    assert "disableBidirectionalAudio" not in listen  # the bridge speaks back with playAudio


# --- allow-list --------------------------------------------------------------------------------------

ALLOW = ("+1555", "+44", "pbx.example.com", "sip:Voice.Example.ORG")


@pytest.mark.parametrize(
    ("to", "allowed"),
    [
        ("+15550142", True),
        ("+1555", True),
        ("+442071234567", True),
        ("+15560142", False),  # another prefix
        ("+19005550142", False),  # premium
        ("+4", False),
        ("15550142", False),  # no "+"
        ("+1555 0142", False),
        ("+1555,ww1234", False),  # a DTMF suffix some carriers dial
        ("+1555\n", False),
        ("+1555" + "0" * 20, False),  # longer than E.164
        ("sip:agent@pbx.example.com", True),
        ("sips:agent@pbx.example.com", True),
        ("sip:pbx.example.com", True),
        ("sip:agent@a.pbx.example.com", True),
        ("sip:agent@deep.a.pbx.example.com:5061;transport=tls", True),
        ("sip:agent@PBX.EXAMPLE.COM", True),
        ("SIP:agent@Pbx.Example.Com", True),
        ("sip:agent@pbx.example.com.", True),
        ("sip:agent@voice.example.org", True),
        ("sip:+15550142@pbx.example.com;user=phone", True),
        ("sip:agent@pbx.example.com?subject=x", True),
        ("sip:agent@pbx.example.com.evil.org", False),
        ("sip:agent@evilpbx.example.com", False),
        ("sip:agent@example.com", False),
        ("sip:agent@evil.org@pbx.example.com", False),  # two "@": which host?
        ("sip:agent%40evil.org@pbx.example.com", True),  # an escaped "@" is part of the user
        ("sip:evil.org;x=@pbx.example.com", False),  # a lenient parser might dial evil.org
        ("sip:evil.org?x=@pbx.example.com", False),
        ("sip:evil.org:5060@pbx.example.com", False),
        ("sip:agent@pbx.example.com:5060@evil.org", False),
        ("sip:agent@pbx.example.com;x=@evil.org", False),
        ("sip:agent@pbx.example.com\n@evil.org", False),
        ("sip:agent@pbx.example.com evil.org", False),
        ("sip:agent@pbx.example.com\x00.evil.org", False),
        ("sip:agent@pb\u0445.example.com", False),  # a Cyrillic letter that looks like "x"
        ("sip:agent@pbx%2eexample.com", False),
        ("sip:agent@10.0.0.1", False),
        ("sip:agent@[::1]", False),
        ("sip:agent@", False),
        ("sip:", False),
        ("tel:+15550142", False),
        ("https://pbx.example.com", False),
        ("pbx.example.com", False),
        ("", False),
    ],
)
def test_allow_list(to: str, allowed: bool) -> None:
    assert transfer_allowed(to, ALLOW) is allowed


@pytest.mark.parametrize("to", ["+15550142", "sip:agent@pbx.example.com"])
def test_an_empty_or_meaningless_list_allows_nothing(to: str) -> None:
    assert transfer_allowed(to, ()) is False
    assert transfer_allowed(to, ("", " ", "+", "agent@pbx.example.com", "10.0.0.1", "*")) is False


def test_entries_are_trimmed() -> None:
    assert transfer_allowed("+15550142", (" +1555 ",))
    assert transfer_allowed("sip:a@pbx.example.com", (" PBX.example.com ",))


def test_destination_kinds() -> None:
    assert destination(NUMBER) == "number"
    assert destination(SIP) == "sip"
    with pytest.raises(ValueError):
        destination("sip:a@evil.org@pbx.example.com")


# --- dial results ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("completed", "answered"),
        ("answered", "answered"),
        ("busy", "busy"),
        ("no-answer", "no-answer"),
        ("failed", "failed"),
        ("canceled", "canceled"),
        (" Busy ", "busy"),
        ("queued", "failed"),
        ("", "failed"),
    ],
)
def test_twilio_dial_call_status(status: str, outcome: str) -> None:
    assert twilio_outcome(status) == outcome


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("completed", "answered"),
        ("busy", "busy"),
        ("failed", "failed"),
        ("timeout", "no-answer"),
        ("no-answer", "no-answer"),
        ("weird", "failed"),
    ],
)
def test_plivo_dial_status(status: str, outcome: str) -> None:
    assert plivo_outcome(status) == outcome


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("answered", "answered"),
        ("completed", "answered"),
        ("busy", "busy"),
        ("timeout", "no-answer"),
        ("unanswered", "no-answer"),
        ("rejected", "failed"),
        ("failed", "failed"),
        ("cancelled", "canceled"),
        ("ringing", "failed"),
    ],
)
def test_vonage_status(status: str, outcome: str) -> None:
    assert vonage_outcome(status) == outcome


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("completed", "answered"),
        ("in-progress", "answered"),
        ("busy", "busy"),
        ("no-answer", "no-answer"),
        ("failed", "failed"),
        ("trying", "failed"),
    ],
)
def test_jambonz_dial_call_status(status: str, outcome: str) -> None:
    assert jambonz_outcome(status) == outcome


@pytest.mark.parametrize(
    ("cause", "bridged", "outcome"),
    [
        ("normal_clearing", True, "answered"),
        ("time_limit", True, "answered"),
        ("normal_clearing", False, "failed"),
        ("user_busy", False, "busy"),
        ("timeout", False, "no-answer"),
        ("no_answer", False, "no-answer"),
        ("originator_cancel", False, "canceled"),
        ("call_rejected", False, "failed"),
        ("not_found", False, "failed"),
        ("unspecified", False, "failed"),
    ],
)
def test_telnyx_hangup_cause(cause: str, bridged: bool, outcome: str) -> None:
    assert telnyx_outcome(cause, bridged=bridged) == outcome
