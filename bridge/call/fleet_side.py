"""What fleet mode asks of a call (:class:`bridge.call.services.FleetCall`), as the part of
:class:`bridge.call.Call` that answers it: routed actions, the Gladia session's state for a successor, the
hand-over to the instance its restarted stream reached, and the quiet end when another instance took it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from bridge.phone_stream import CallResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from bridge.audio import AudioFormat
    from bridge.delivery import CallDelivery
    from bridge.phone_stream import PhoneStream
    from bridge.reply.actions import Action
    from bridge.reply.bot_socket import BotSocket
    from bridge.reply.call_reply import CallReply
    from bridge.settings import Settings
    from bridge.stt.stream import SessionState as SttSessionState
    from bridge.stt.stream import SttStream

log = structlog.get_logger("bridge.call")


class FleetSide:
    """The fleet's side of a call (the attributes are :class:`bridge.call.Call`'s)."""

    __slots__ = ("_ended",)
    _ended: bool  # the call has ended here (or gone to another instance): Call sets it first
    bot_socket: BotSocket | None
    delivery: CallDelivery
    leave_suspension: Callable[[], None] | None
    reply: CallReply
    settings: Settings
    stream: PhoneStream | None
    streams: int
    stt: SttStream
    stt_format: AudioFormat

    def apply_actions(self, actions: list[Action], key: str) -> object:
        """Fleet mode: actions another instance routed to this call (``key`` deduplicates a retry)."""
        return self.reply.apply(actions, key=key)

    def session_fields(self) -> dict[str, str] | None:
        """Fleet mode: where the Gladia session stands plus the call's shape; None: no session yet."""
        now = self.stt.state()
        return None if now is None else {**now.fields(), **self._shape()}

    async def hand_over(self) -> dict[str, str] | None:
        """Fleet mode: give the call up to the instance its restarted stream reached. Only a suspended
        call is handed over; None when its stream is live here (or it is over)."""
        leave = self.leave_suspension
        if leave is None:
            return None  # its stream is live here (or it is gone): nothing to hand over
        leave()
        now = await self._hand_over(timeout=self.settings.server.stream_restart_grace or 2.0)
        return {**(now.fields() if now is not None else {}), **self._shape()}

    def _shape(self) -> dict[str, str]:
        """What a successor must know of a call besides its Gladia session: its streams and channels."""
        return {"streams": str(self.streams), "channels": str(self.stt_format.channels)}

    async def _hand_over(self, timeout: float) -> SttSessionState | None:
        """The call's restarted stream reached another instance, which carries it on. This one lets
        Gladia acknowledge what it sent, closes its session socket (the session stays open), stops its
        reply and ends here without a word to the bot (the call goes on over there). Returns where the
        Gladia session stands."""
        if self._ended:
            return None
        self._ended = True
        state = await self.stt.hand_over(timeout)
        await self.reply.close()
        self.delivery.close()  # what is left is delivered by the next owner (the delivery gate closes)
        if self.bot_socket is not None:
            await self.bot_socket.close()
        log.info("call.handed_over", session=state.session_id if state is not None else None)
        return state

    def lost_to_another_instance(self) -> None:
        """Fleet mode: another instance took the call over (this one was cut off from Redis, or
        paused): end it here. Its end is not sent (the new owner sent ``instance_lost``)."""
        if self.stream is not None and self.stream.forced_end is None:
            self.stream.forced_end = CallResult("instance_lost", 1001, "another bridge instance has the call")
            self.stream.hang_up()
