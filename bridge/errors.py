"""The bridge's exception tree, and the one place that decides what is retryable.

    BridgeError
     +-- ConfigError            bad settings; raised at start-up only
     +-- PhoneProtocolError     the carrier broke its media-stream protocol (carries a close code)
     +-- UnsupportedOperation   the carrier's dialect has no such outbound message (e.g. marks on jambonz)
     +-- SttError               Gladia init/handshake failed (``retryable``, ``session_lost``)
     +-- SttProtocolError       a Gladia message the bridge cannot read (also a ValueError)
     +-- HandshakeRefused       the Gladia WebSocket upgrade got an HTTP status other than 101 (``status``)
     +-- ConnectFailed          no Gladia WebSocket connection (TCP/TLS failed, or the answer was not HTTP)
     +-- PostFailed             a webhook POST got no whole answer (connection, TLS, framing, time bound)
     +-- WavError               not a WAV file the tools can read (also a ValueError)
     +-- ModelError             the local engine's model files are missing or not the pinned ones
     +-- ActionError            a bot's action request that cannot be accepted (names the field; ``too_large``)
     +-- ActionFailed           an accepted action that cannot be carried out (a play URL refused or failing,
     |                          too many streams open); the action ends with ``action.failed``
     +-- TtsError               speech synthesis failed (the embedded engine, or the TTS endpoint)
     +-- FleetUnavailable       fleet mode: Redis cannot be reached for something that needs it now
     +-- ControlError           a carrier's call-control API refused or did not answer (transfer, redirect)
     |    +-- EslProtocolError  (bridge.control.esl) FreeSWITCH's event socket sent something unreadable
     +-- WsProtocolError        (bridge.ws_protocol) a WebSocket peer broke RFC 6455 (carries a close code)
     +-- HandshakeError         (bridge.ws_protocol) not a valid WebSocket opening handshake (HTTP 400)

A failed webhook POST is not an exception to the bridge: :mod:`bridge.delivery.webhook` turns ``PostFailed``
and HTTP errors into an outcome.

Pure modules raise these; the I/O shell logs them and turns them into close codes and end reasons.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A setting is missing or invalid. The message names the key."""


class PhoneProtocolError(BridgeError):
    """The phone side sent something the adapter cannot accept.

    ``close_code`` is the WebSocket close code to answer with (RFC 6455 section 7.4.1):
    1003 unsupported data (e.g. binary on a text-only dialect), 1007 invalid payload
    (malformed JSON, bad base64, missing field), 1008 policy violation (out-of-order messages).
    """

    def __init__(self, reason: str, close_code: int = 1007) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class UnsupportedOperation(BridgeError):
    """The dialect has no such outbound message (e.g. marks on jambonz)."""


class SttError(BridgeError):
    """Talking to Gladia failed.

    ``retryable``: trying the same thing again later may work (429, 5xx, network errors).
    ``session_lost``: the live session cannot be resumed (its URL was refused or it closed for good);
    a new session must be opened for the rest of the call.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, session_lost: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.session_lost = session_lost


def http_status_retryable(status: int) -> bool:
    """Whether an HTTP answer is worth retrying: 408, 425, 429 and every 5xx."""
    return status in (408, 425, 429) or status >= 500


def handshake_status_loses_session(status: int) -> bool:
    """A session WebSocket handshake refused with 401/403/404 means the session is gone.

    (Gladia answers 403 once a session can no longer be resumed; see the reference notes.)
    """
    return status in (401, 403, 404, 410)


def close_code_loses_session(code: int) -> bool:
    """Gladia close codes 4400-4499 end the session for good (as the official SDKs treat them)."""
    return 4400 <= code <= 4499


class SttProtocolError(BridgeError, ValueError):
    """A Gladia server message that is not JSON, not an object, or has no ``type``."""


class HandshakeRefused(BridgeError):
    """The server answered the WebSocket upgrade with an HTTP status other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"WebSocket handshake refused with HTTP {status}")
        self.status = status


class ConnectFailed(BridgeError):
    """No WebSocket connection: the TCP/TLS connection failed, or the handshake was not HTTP."""


class PostFailed(BridgeError):
    """An HTTP POST (:mod:`bridge.delivery.http_post`) got no whole answer: the connection or TLS failed,
    the answer was not HTTP, the connection closed before its end, or the time bound passed."""


class WavError(BridgeError, ValueError):
    """Not a WAV file this reader understands; the message says why."""


class ModelError(BridgeError):
    """The model files are missing or not the ones this release was tested with."""


class ActionError(BridgeError):
    """A bot's action request the bridge cannot accept; the message names the field. ``too_large``:
    over a size bound (HTTP 413) rather than malformed (HTTP 422)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class ActionFailed(BridgeError):
    """An accepted action the bridge cannot carry out (its play URL refused or failing, too many streams
    open on the call); the action ends with ``action.failed`` carrying the message."""


class TtsError(BridgeError):
    """Speech synthesis failed (the engine, or the TTS endpoint's answer); the action fails."""


class FleetUnavailable(BridgeError):
    """Fleet mode: the fleet's Redis cannot be reached for something that needs it now."""


class ControlError(BridgeError):
    """A carrier's call-control API refused or did not answer (or a carrier id cannot be put in its
    request). The message names the operation and the host, never a credential."""
