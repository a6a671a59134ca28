"""The HTTP edge: every aiohttp handler (carrier routes and TwiML, carrier authentication, the bot API,
the transcript API, health, readiness and metrics). The call and everything below it know nothing of it."""
