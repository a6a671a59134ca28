"""The bridge's URLs for one outbound call, and FreeSWITCH's originate command (pure data: what
:mod:`bridge.dial.carriers` builds its requests from and returns)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.dial.order import OUTBOUND_PARAMETER, OUTBOUND_QUERY


@dataclass(frozen=True, slots=True)
class DialLinks:
    """The bridge's URLs for one outbound call: ``base`` its public http(s) URL (no trailing slash),
    ``stream_url`` the ws(s) URL of the platform's stream route (``/{route}/stream``, with ``?token=``
    when that carrier has a stream token), ``token`` the call's claim (:func:`bridge.dial.order.claim_token`)."""

    base: str
    stream_url: str
    token: str

    def route(self, carrier: str, name: str) -> str:
        return f"{self.base}/{carrier}/{name}?t={self.token}"

    def status_url(self, carrier: str) -> str:
        return self.route(carrier, "call-status")

    def amd_url(self, carrier: str) -> str:
        return self.route(carrier, "amd")

    def answer_url(self, carrier: str) -> str:
        return self.route(carrier, "outbound-answer")

    def after_stream_url(self, carrier: str) -> str:
        return f"{self.base}/{carrier}/after-stream"

    def claimed_stream_url(self) -> str:
        """The stream URL carrying the claim as ``?outbound=`` (platforms that pass no stream parameters)."""
        joiner = "&" if "?" in self.stream_url else "?"
        return f"{self.stream_url}{joiner}{OUTBOUND_QUERY}={self.token}"

    def stream_parameters(self) -> dict[str, str]:
        """The claim as a stream parameter (Twilio, SignalWire ``<Parameter>``)."""
        return {OUTBOUND_PARAMETER: self.token}


@dataclass(frozen=True, slots=True)
class EslOriginate:
    """FreeSWITCH: the ``api`` command that places the call (it answers once the call is answered or has
    failed), and the channel uuid the bridge chose for it (the call's carrier id)."""

    command: str
    uuid: str
