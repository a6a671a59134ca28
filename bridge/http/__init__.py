"""The HTTP edge: every aiohttp handler: the phone's media stream (``phone``), the Twilio voice webhook's
TwiML (``twiml``), the bot API (``bot_api``), the transcript API (``transcripts``), health, readiness and
metrics (``health``), the operator's console page (``console``). The call and everything below it know
nothing of it; the call a stream carries is run by :mod:`bridge.carry_call`."""
