"""Telephony voice-bot bridge: phone media streams -> Gladia live v2 -> bot webhook, and the bot's answer back.

The modules follow the data flow; the diagram of it is in the README ("What happens to a call").
"""

__version__ = "0.1.0"
