"""Calls the bridge places for the bot (``POST /v1/calls``): the way out.

Pure parts: :mod:`~bridge.dial.order` (the bot's request, its checks, the signed claim a call's stream and
its carrier's callbacks carry), :mod:`~bridge.dial.carriers` (each carrier's create and cancel requests,
and the markup its answer URL serves), :mod:`~bridge.dial.reports` (each carrier's status and
answering-machine callbacks, read into one shape), :mod:`~bridge.dial.detector` (the bridge's own
answering-machine and beep detector over the callee's audio). The I/O shell: :mod:`~bridge.dialing`
(the calls being placed: the carrier request after the answer, the ring timer, the events before the
stream), and the routes in :mod:`bridge.http.outbound`.
"""
