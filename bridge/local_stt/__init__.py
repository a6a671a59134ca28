"""A local speech-to-text server that speaks Gladia's live v2 protocol, for running without a key.

request.py    StreamingRequest validation, Gladia's error bodies (pure)
audio_in.py   any Gladia input format -> float32 16 kHz per channel, streaming (pure)
segmenter.py  voice activity -> speech_start / speech_end / utterances, endpointing (pure)
models.py     the Whisper models (tiny.en, multilingual base): their packages, checksums, languages
languages.py  which language each utterance is recognised in (Gladia's language_config) (pure)
engine.py     the recogniser interface; faster-whisper (Whisper tiny.en or base) and Silero VAD (ONNX)
live.py       one live session: byte offsets, acknowledgments, transcripts, resume, results
server.py     aiohttp routes: POST/GET/DELETE /v2/live[/{id}] and the session WebSocket
"""
