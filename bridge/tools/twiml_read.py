"""TwiML as Twilio reads it, for ``bridge call`` playing the carrier's side of a call (pure).

Only what a call through the bridge meets: ``<Connect><Stream>`` (with ``<Parameter>``s and the
``<Connect action>`` fetched when the stream ends), ``<Dial>`` with ``<Number>``/``<Sip>`` (``url``: the
whisper run on the answering person's end; ``statusCallback``/``statusCallbackEvent``), ``<Hangup>``,
``<Redirect>``, and ``<Say>``/``<Play>``/``<Pause>`` (printed, not played). Anything else is kept as
:class:`Unsupported` for the caller to report. Defaults as Twilio documents them: ``method`` POST, the
``<Dial timeout>`` 30 s (https://www.twilio.com/docs/voice/twiml/dial), ``<Pause length>`` 1 s.

The documents come from the bridge on this machine, so :mod:`xml.etree.ElementTree` reads them; their
size is bounded (:data:`MAX_TWIML`) by whoever fetches them, and checked again here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

MAX_TWIML = 64 * 1024  # bytes of TwiML read at most
DIAL_TIMEOUT_S = 30  # <Dial timeout> when absent (Twilio's default)


@dataclass(frozen=True, slots=True)
class ConnectStream:
    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    action: str | None = None  # fetched when the stream ends; None: the next verb runs
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class DialTarget:
    """A ``<Number>`` or ``<Sip>`` of a ``<Dial>``."""

    noun: str  # Number, Sip, Client...
    to: str
    url: str | None = None  # the whisper's TwiML, run for the person who answers
    method: str = "POST"
    status_callback: str | None = None
    status_events: tuple[str, ...] = ()
    status_method: str = "POST"


@dataclass(frozen=True, slots=True)
class Dial:
    targets: tuple[DialTarget, ...]
    action: str | None = None
    method: str = "POST"
    timeout_s: int = DIAL_TIMEOUT_S
    caller_id: str | None = None

    @property
    def announces(self) -> bool:
        return any(t.url for t in self.targets)


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Play:
    url: str


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


@dataclass(frozen=True, slots=True)
class Unsupported:
    verb: str


Verb = ConnectStream | Dial | Hangup | Redirect | Say | Play | Pause | Unsupported


def read_twiml(document: bytes | str) -> list[Verb]:
    """The verbs of a ``<Response>``, in order.

    Raises:
        ValueError: too long, not XML, not a ``<Response>``, or a verb missing what it needs (a URL).
    """
    data = document.encode() if isinstance(document, str) else document
    if len(data) > MAX_TWIML:
        raise ValueError(f"TwiML over {MAX_TWIML // 1024} KB")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from exc
    if root.tag != "Response":
        raise ValueError(f"the document is a <{root.tag}>, not a TwiML <Response>")
    return [_verb(element) for element in root]


def _verb(e: ET.Element) -> Verb:
    method = _method(e)
    match e.tag:
        case "Connect":
            stream = e.find("Stream")
            if stream is None:
                return Unsupported("Connect (without <Stream>)")
            url = _required(stream, "url")
            params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter") if p.get("name")}
            return ConnectStream(url, params, e.get("action") or None, method)
        case "Dial":
            return _dial(e, method)
        case "Hangup" | "Reject":
            return Hangup()
        case "Redirect":
            url = (e.text or "").strip()
            if not url:
                raise ValueError("<Redirect> without a URL")
            return Redirect(url, method)
        case "Say":
            return Say((e.text or "").strip())
        case "Play":
            url = (e.text or "").strip()
            if not url:
                raise ValueError("<Play> without a URL")
            return Play(url)
        case "Pause":
            return Pause(_number(e.get("length"), 1.0))
    return Unsupported(e.tag)


def _dial(e: ET.Element, method: str) -> Dial:
    targets = [
        DialTarget(
            noun.tag,
            (noun.text or "").strip(),
            noun.get("url") or None,
            _method(noun),
            noun.get("statusCallback") or None,
            tuple((noun.get("statusCallbackEvent") or "").replace(",", " ").split()),
            (noun.get("statusCallbackMethod") or "POST").upper(),
        )
        for noun in e
    ]
    if not targets and (e.text or "").strip():  # <Dial>+15550100</Dial>: a number as the verb's text
        targets = [DialTarget("Number", (e.text or "").strip())]
    if not targets or not all(t.to for t in targets):
        raise ValueError("<Dial> with nothing to dial")
    return Dial(
        tuple(targets),
        e.get("action") or None,
        method,
        int(_number(e.get("timeout"), DIAL_TIMEOUT_S)),
        e.get("callerId") or None,
    )


def _method(e: ET.Element) -> str:
    method = (e.get("method") or "POST").upper()
    if method not in ("GET", "POST"):
        raise ValueError(f"<{e.tag} method={method!r}>: GET or POST")
    return method


def _required(e: ET.Element, name: str) -> str:
    value = e.get(name)
    if not value:
        raise ValueError(f"<{e.tag}> without {name}")
    return value


def _number(text: str | None, default: float) -> float:
    if text is None or not text.strip():
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
