"""The reply-loop tests' phone call: :class:`bridge.tools.phone.TwilioPhone` playing the caller's audio,
then silence until a condition holds (then ``stop``), the bridge closes the socket, or a bound."""

from __future__ import annotations

from collections.abc import Callable

from bridge.tools.phone import TwilioPhone

PhoneCall = TwilioPhone


async def phone_call(
    url: str,
    ulaw: bytes,
    *,
    until: Callable[[TwilioPhone], bool],
    max_seconds: float = 30.0,
    mark_delay: float = 0.0,
    events: Callable[[TwilioPhone, float], list[str]] | None = None,
) -> TwilioPhone:
    """Play ``ulaw`` in real time, then silence until ``until(phone)`` holds, the bridge closes the
    socket, or ``max_seconds``; ``events(phone, t)`` may add messages (DTMF) before each frame."""
    async with TwilioPhone.dial(url, mark_delay=mark_delay) as phone:
        await phone.say(ulaw)

        def done() -> bool:
            return until(phone) or phone.now > max_seconds

        each = (lambda t: events(phone, t)) if events is not None else None
        await phone.wait(done, max_seconds, each)
    return phone
