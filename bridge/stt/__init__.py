"""The speech-to-text stage: Gladia live v2 (pure wire format, replay buffer, asyncio session)."""
