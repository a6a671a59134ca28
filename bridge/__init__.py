"""Telephony voice-bot bridge: phone media streams -> Gladia live v2 -> bot webhook.

    phone (Twilio Media Streams WebSocket)
        |  text frames: connected / start / media(base64 mu-law) / dtmf / mark / stop
        v
    bridge.phone_socket      aiohttp handlers: /twilio/voice (TwiML), /twilio/stream (WebSocket)
        v
    bridge.adapters.twilio   sans-I/O: JSON text in -> typed PhoneEvents out (+ outbound messages)
        v
    bridge.call              one call: adapter events -> audio -> STT session -> delivery
        v
    bridge.audio             sans-I/O: mu-law passthrough, or A-law / PCM16 8k / PCM16 16k
        v
    bridge.stt.replay        sans-I/O: session byte offsets, unacknowledged audio, resend pieces
    bridge.stt.protocol      sans-I/O: Gladia live v2 messages -> typed SttEvents
    bridge.stt.session       asyncio: POST /v2/live, session WebSocket, resume on drops
        v  final utterances
    bridge.delivery          signed (Standard Webhooks), retried, ordered POSTs to BOT_WEBHOOK_URL
"""

__version__ = "0.1.0"
