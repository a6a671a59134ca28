"""Carriers' call-control requests, built and not sent (pure): credentials and ids in, :class:`HttpRequest` out.

Where a carrier has no markup the bridge can continue after the media stream (Telnyx Call Control, Vonage,
FreeSWITCH, Asterisk, a Twilio call whose TwiML the bridge did not write), the bridge hands the call over
with one request to the carrier's REST API. Each builder here writes that request exactly as the carrier's
own SDK does for the same operation (the tests compare them with twilio, telnyx, plivo and vonage capturing
their requests); :mod:`bridge.control.send` sends it.

Two rules hold for every builder:

* an id taken from a carrier (a CallSid, a call-control id, a channel id) is one quoted path segment, so an
  id holding ``/``, ``?``, ``#`` or ``%`` cannot change the path, and ``.``/``..``/empty ids are refused
  (:class:`~bridge.errors.ControlError`): a dot segment would climb the path at the server;
* credentials go into the ``Authorization`` header only, and :class:`HttpRequest`'s ``repr`` hides it, so a
  request logged by mistake carries no secret.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jwt

from bridge.errors import ControlError

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
VONAGE_JWT_TTL = 900  # s: the Vonage SDK's default ``exp`` (iat + 15 min), vonage_jwt/jwt.py


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request to a carrier's API, ready to send as it is."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def __repr__(self) -> str:
        shown = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        return (
            f"HttpRequest(method={self.method!r}, url={self.url!r}, headers={shown!r}, body=<{len(self.body)} bytes>)"
        )


def segment(carrier_id: str) -> str:
    """``carrier_id`` as one URL path segment (every reserved character quoted but ``:`` and ``@``).

    Raises:
        ControlError: the id is empty, ``.`` or ``..`` (a dot segment would move the path), or has a
            control character.
    """
    if carrier_id in ("", ".", "..") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in carrier_id):
        raise ControlError(f"a carrier id unusable in a request path: {carrier_id[:64]!r}")
    # ":" and "@" may stand in a segment (RFC 3986 3.3 pchar) and are sent as the SDKs send them (Telnyx's
    # call-control ids read "v3:..."); everything else reserved is quoted.
    return quote(carrier_id, safe=":@")


def _base(api_url: str) -> str:
    if not api_url.startswith(("http://", "https://")):
        raise ControlError("a call-control API URL must be http(s)")
    return api_url.rstrip("/")


def _basic(user: str, password: str) -> str:
    # RFC 7617: user-id and password joined by ":" then base64; a ":" in the user-id cannot be carried.
    if ":" in user:
        raise ControlError("a Basic-auth user name cannot hold ':'")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _bearer(token: str) -> str:
    if not token or any(c in token for c in "\r\n"):
        raise ControlError("an API token must be one non-empty line")
    return f"Bearer {token}"


def _json(method: str, url: str, auth: str, payload: Mapping[str, Any]) -> HttpRequest:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {"Authorization": auth, "Content-Type": _JSON, "Accept": _JSON}
    return HttpRequest(method, url, headers, body)


def _form(url: str, auth: str, fields: Sequence[tuple[str, str]]) -> HttpRequest:
    headers = {"Authorization": auth, "Content-Type": _FORM, "Accept": _JSON}
    return HttpRequest("POST", url, headers, urlencode(fields).encode("ascii"))


def twilio_call_update(api_url: str, account_sid: str, auth_token: str, call_sid: str, *, twiml: str) -> HttpRequest:
    """Twilio's "modify a live call" with inline TwiML: the call leaves ``<Connect><Stream>`` and runs ``twiml``.

    ``POST {api_url}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``, form ``Twiml=``, HTTP Basic
    (twilio/twilio-python@306691e ``twilio/rest/api/v2010/account/call/__init__.py`` ``_update``). The TwiML
    must use absolute URLs (Twilio error 15004).
    """
    url = f"{_base(api_url)}/2010-04-01/Accounts/{segment(account_sid)}/Calls/{segment(call_sid)}.json"
    return _form(url, _basic(account_sid, auth_token), [("Twiml", twiml)])


def signalwire_call_update(api_url: str, project_id: str, api_token: str, call_sid: str, *, url: str) -> HttpRequest:
    """SignalWire's Compatibility (LaML) "update a call": the call fetches cXML from ``url`` (POST).

    ``POST {space}/api/laml/2010-04-01/Accounts/{Project}/Calls/{Sid}.json``, form ``Url``/``Method``, HTTP
    Basic project:token (https://developer.signalwire.com/compatibility-api/client-sdks/methods/calls/update).
    Inline ``Twiml``/``Laml`` on update is UNVERIFIED for SignalWire (documented on create only), so the
    bridge serves the markup at ``url`` instead: that reading works either way.
    """
    path = f"/api/laml/2010-04-01/Accounts/{segment(project_id)}/Calls/{segment(call_sid)}.json"
    return _form(_base(api_url) + path, _basic(project_id, api_token), [("Url", url), ("Method", "POST")])


def telnyx_transfer(
    api_url: str,
    api_key: str,
    call_control_id: str,
    *,
    to: str,
    from_: str | None,
    timeout_secs: int,
    audio_url: str | None,
    webhook_url: str | None,
    client_state: str | None,
) -> HttpRequest:
    """Telnyx Call Control "transfer call": the caller is dialled through to ``to`` (E.164 or SIP URI).

    ``POST {api_url}/v2/calls/{call_control_id}/actions/transfer``, JSON, Bearer API key
    (https://developers.telnyx.com/api-reference/call-commands/transfer-call; telnyx-python
    ``resources/calls/actions.py``). ``audio_url`` is played to the answering party before bridging.
    ``client_state`` is given as plain text and sent base64-encoded, as Telnyx requires ("must be a valid
    Base-64 encoded string"); it comes back, encoded, on every webhook of the transfer. Absent fields are
    left out, as the SDK leaves them out.
    """
    if not 5 <= timeout_secs <= 600:  # Telnyx's documented range for timeout_secs
        raise ControlError(f"telnyx timeout_secs must be 5-600, not {timeout_secs}")
    payload: dict[str, Any] = {"to": to, "timeout_secs": timeout_secs}
    if from_ is not None:
        payload["from"] = from_
    if audio_url is not None:
        payload["audio_url"] = audio_url
    if webhook_url is not None:
        payload["webhook_url"] = webhook_url
    if client_state is not None:
        payload["client_state"] = base64.b64encode(client_state.encode()).decode("ascii")
    url = f"{_base(api_url)}/v2/calls/{segment(call_control_id)}/actions/transfer"
    return _json("POST", url, _bearer(api_key), payload)


def plivo_transfer(api_url: str, auth_id: str, auth_token: str, call_uuid: str, *, aleg_url: str) -> HttpRequest:
    """Plivo "transfer a call": the caller's leg (A leg) fetches new Plivo XML from ``aleg_url`` (POST).

    ``POST {api_url}/v1/Account/{auth_id}/Call/{call_uuid}/`` (the trailing ``/`` as the SDK sends it), JSON
    ``legs=aleg, aleg_url, aleg_method=POST``, HTTP Basic (plivo/plivo-python@a0cd323
    ``plivo/resources/calls.py`` ``transfer``). The body repeats ``call_uuid``, as the SDK's body does.
    """
    url = f"{_base(api_url)}/v1/Account/{segment(auth_id)}/Call/{segment(call_uuid)}/"
    payload = {"call_uuid": call_uuid, "legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST"}
    return _json("POST", url, _basic(auth_id, auth_token), payload)


def vonage_jwt(application_id: str, private_key_pem: str, *, now: float, jti: str) -> str:
    """A Vonage application JWT as the Vonage SDK makes it: RS256, claims ``application_id``, ``iat``,
    ``jti``, ``exp`` = iat + 15 min (Vonage/vonage-python-sdk@b308cb1 ``jwt/src/vonage_jwt/jwt.py``).

    Raises:
        ControlError: the private key is not an RSA PEM PyJWT can sign with (the message holds no key).
    """
    iat = int(now)
    claims = {"application_id": application_id, "iat": iat, "jti": jti, "exp": iat + VONAGE_JWT_TTL}
    try:
        return jwt.encode(claims, private_key_pem, algorithm="RS256", headers={"alg": "RS256", "typ": "JWT"})
    except (ValueError, TypeError, jwt.PyJWTError) as exc:  # cryptography's key errors are ValueError/TypeError
        raise ControlError(f"the Vonage private key cannot sign an RS256 JWT ({type(exc).__name__})") from None


def vonage_transfer(
    api_url: str,
    application_id: str,
    private_key_pem: str,
    uuid: str,
    *,
    ncco: list[dict[str, Any]],
    now: float,
    jti: str,
) -> HttpRequest:
    """Vonage "transfer a call to an NCCO": the call leg ``uuid`` leaves its NCCO and runs ``ncco``.

    ``PUT {api_url}/v1/calls/{uuid}`` ``{"action": "transfer", "destination": {"type": "ncco", "ncco": [...]}}``,
    Bearer application JWT (``vonage_voice/voice.py`` ``transfer_call_ncco``). ``uuid`` is the phone (or SIP)
    leg, not the WebSocket leg. ``now`` and ``jti`` (a fresh uuid4 per request) are given by the shell so the
    token is reproducible in tests.
    """
    token = vonage_jwt(application_id, private_key_pem, now=now, jti=jti)
    payload = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
    return _json("PUT", f"{_base(api_url)}/v1/calls/{segment(uuid)}", _bearer(token), payload)


def jambonz_redirect(api_url: str, account_sid: str, api_key: str, call_sid: str, *, call_hook_url: str) -> HttpRequest:
    """jambonz "update a call" with a new ``call_hook``: the call re-fetches its application from the hook.

    ``POST {api_url}/v1/Accounts/{account_sid}/Calls/{call_sid}`` ``{"call_hook": {"url", "method": "POST"}}``
    (jambonz/jambonz-api-server@dd755f8 ``lib/swagger/swagger.yaml`` ``updateCall``, answered 200 or 202; the
    same route also answers PUT, ``lib/routes/api/accounts.js``). ``api_url`` is the REST base, with or
    without its ``/v1``. Auth ``Bearer <api key>``: the swagger's global ``bearerAuth`` and the server's
    passport-http-bearer strategy (``lib/auth/index.js``, same commit); no jambonz web page was checked.
    """
    base = _base(api_url).removesuffix("/v1")  # jambonz quotes its REST base with /v1 (api.jambonz.cloud/v1)
    url = f"{base}/v1/Accounts/{segment(account_sid)}/Calls/{segment(call_sid)}"
    return _json("POST", url, _bearer(api_key), {"call_hook": {"url": call_hook_url, "method": "POST"}})


def asterisk_redirect(ari_url: str, user: str, password: str, channel_id: str, *, endpoint: str) -> HttpRequest:
    """Asterisk ARI "redirect the channel to a different location" (e.g. ``PJSIP/+15551230000@trunk``).

    ``POST {ari}/channels/{channelId}/redirect?endpoint=...``, HTTP Basic with an ``ari.conf`` user
    (https://docs.asterisk.org/Latest_API/API_Documentation/Asterisk_REST_Interface/Channels_REST_API/).
    The channel must be in a Stasis application (409 otherwise); 422 when the endpoint is of another type.
    """
    url = f"{_base(ari_url)}/channels/{segment(channel_id)}/redirect?{urlencode({'endpoint': endpoint})}"
    return HttpRequest("POST", url, {"Authorization": _basic(user, password), "Accept": _JSON}, b"")


def asterisk_continue(
    ari_url: str,
    user: str,
    password: str,
    channel_id: str,
    *,
    context: str,
    extension: str,
    priority: int | None = None,
    label: str | None = None,
) -> HttpRequest:
    """Asterisk ARI "exit application; continue execution in the dialplan" at ``context``/``extension``.

    ``POST {ari}/channels/{channelId}/continue?context=&extension=&priority=&label=`` (``label`` supersedes
    ``priority``), HTTP Basic; same page as :func:`asterisk_redirect`. For an operator whose dialplan does
    the transfer.
    """
    query: list[tuple[str, str]] = [("context", context), ("extension", extension)]
    if priority is not None:
        query.append(("priority", str(priority)))
    if label is not None:
        query.append(("label", label))
    url = f"{_base(ari_url)}/channels/{segment(channel_id)}/continue?{urlencode(query)}"
    return HttpRequest("POST", url, {"Authorization": _basic(user, password), "Accept": _JSON}, b"")
