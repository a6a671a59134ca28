"""The bridge's own answering-machine and beep detector (pure): the callee's audio in, a verdict out.

For carriers without a detector of their own (jambonz without ``amd``, FreeSWITCH, Asterisk) and as a
second opinion. It is heuristic: it listens to how the callee speaks, never to what is said, and a person
who answers with a long sentence is taken for a machine, a machine with a short greeting for a person.
``benchmarks/bench_amd.py`` measures it on generated greetings.

The audio is cut into 20 ms frames (the input may come in pieces of any length). Each frame gives:

- its level against a noise floor that adapts (it falls at once to a quieter frame, follows the line's
  own wobble, and steps up when 1.5 s pass without one frame near it: the line got noisier, as when
  digital silence gives way to hiss at the answer), so a frame is *speech* when it is
  :data:`SPEECH_OVER_FLOOR_DB` over the floor (and over an absolute minimum, for digital silence);
- whether it is a *pure tone*: its frequency from the autocorrelation at lags 1 and 2 (which white noise
  leaves unbiased), a two-tap resonator at that frequency (``x[n+1] + x[n-1] = 2 cos(w) x[n]``, what a
  single sine obeys exactly) leaves little of the frame unexplained, the zero-crossing rate says the same
  frequency, and a projection on that frequency's sine and cosine (a Goertzel filter's figure) holds most
  of the frame's energy. A tone frame is not speech.

Then:

- **human**: the first utterance (speech with gaps shorter than :data:`PAUSE_MS`) lasts at most
  :data:`HUMAN_MAX_MS` and is followed by a :data:`PAUSE_MS` pause (``short_greeting``): someone said
  "Hello?" and waits. An utterance between :data:`HUMAN_MAX_MS` and :data:`MACHINE_MIN_MS` needs a
  longer pause, :data:`LONG_PAUSE_MS`, shorter gaps joining it;
- **machine**: the utterance goes on past :data:`MACHINE_MIN_MS` (``long_greeting``), or the transcripts
  given to :meth:`MachineDetector.words` hold :data:`MACHINE_WORDS` words or more before any verdict
  (``many_words``), or a beep is heard (``beep``);
- **unknown**: no speech at all for :data:`SILENCE_MS` (``silence``);
- **fax** (``fax_tone``): a 2100 Hz answer tone (CED) lasting :data:`FAX_TONE_MS`;
- a **beep**: tone frames at one steady frequency (:data:`BEEP_MIN_HZ` - :data:`BEEP_MAX_HZ`) for at
  least :data:`BEEP_MIN_MS`, reported when the tone stops (a message recorded from then on is heard).

After a machine verdict it keeps listening for the beep until one is heard, the greeting has been over
for :data:`GREETING_END_MS` of quiet (it ended in silence), or :data:`BEEP_WINDOW_MS` after the answer.
The cost per frame is a dozen ``audioop`` calls (C) and a little arithmetic: no numpy on the audio path.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import warnings
from dataclasses import dataclass

from bridge.dial.reports import AnsweredBy

with warnings.catch_warnings():
    # stdlib audioop warns on 3.11/3.12 and is gone in 3.13, where the audioop-lts package provides it
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME_MS = 20
SPEECH_OVER_FLOOR_DB = 7.5  # a frame this far over the noise floor is speech (README: noise)
MIN_SPEECH_DB = 36.0  # ... and at least this loud (20 log10 of the 16-bit RMS: about -54 dBFS)
FIRST_FLOOR_MAX_DB = 55.0  # the floor starts at the first frame's level, at most this (about -35 dBFS)
FLOOR_BLOCK_FRAMES = 25  # the quietest frame of each 0.5 s is kept ...
FLOOR_BLOCKS = 3  # ... for the last 1.5 s: all of it loud means the line itself got louder
MIN_UTTERANCE_MS = 100  # shorter bursts (a click, a breath) are not an utterance
PAUSE_MS = 800  # the pause after a short first utterance that makes it a person's
HUMAN_MAX_MS = 1500  # a first utterance at most this long, then a pause: a person
LONG_PAUSE_MS = 1500  # the pause a longer (but not machine-long) first utterance needs
MACHINE_MIN_MS = 2200  # speech going on this long without a pause: a machine's greeting (see the README)
SILENCE_MS = 5000  # no speech for this long after the answer: unknown
MACHINE_WORDS = 8  # this many words before a verdict: a machine (SignalWire's default is 6, jambonz's 9)
GREETING_END_MS = 3000  # after a machine verdict: this much quiet after the last speech ends the greeting
BEEP_WINDOW_MS = 45_000  # the beep is looked for until this long after the answer
BEEP_MIN_MS = 140  # a tone of this many whole frames (a 150 ms beep fills 7 of them at least)
BEEP_MIN_HZ = 300
BEEP_MAX_HZ = 3400
TONE_RESIDUE = 0.3  # the resonator's unexplained RMS over the frame's, at most (a tone 20 dB over noise)
TONE_SHARE = 0.75  # the share of the frame's energy at the tone's frequency, at least
TONE_STEADY = 0.03  # a tone's frames stay within 3% (and 20 Hz) of its first frame's frequency
FAX_HZ = (2050, 2150)  # CED, the answer tone of a fax machine (2100 Hz, ITU-T T.30)
FAX_TONE_MS = 1500

_WORD = re.compile(r"[\w']+")
_BIG_ENDIAN = sys.byteorder == "big"  # audioop works in native order; the audio is little-endian


@dataclass(frozen=True, slots=True)
class Verdict:
    answered_by: AnsweredBy  # human | machine | unknown | fax (a fax machine's 2100 Hz answer tone, CED)
    detection_ms: int  # ms of the callee's audio from the answer to the verdict
    reason: str  # a short word for the log and the event: short_greeting, long_greeting, many_words, beep,
    # silence, fax_tone


@dataclass(frozen=True, slots=True)
class Beep:
    after_ms: int  # ms from the answer to the end of the beep (a message left now is recorded)
    frequency: int  # Hz


class _Tone:
    """Tone frames in a row at one frequency (one gap frame allowed)."""

    __slots__ = ("end_ms", "frames", "hz", "misses", "start_ms", "sum_hz")

    def __init__(self, start_ms: int, hz: float) -> None:
        self.start_ms = start_ms
        self.end_ms = start_ms + FRAME_MS
        self.hz = hz
        self.sum_hz = hz
        self.frames = 1
        self.misses = 0

    def takes(self, hz: float) -> bool:
        return abs(hz - self.hz) <= max(20.0, TONE_STEADY * self.hz)

    @property
    def mean_hz(self) -> float:
        return self.sum_hz / self.frames


class MachineDetector:
    """Feed it the callee's audio from the answer on; it says human or machine, and when a beep ends.

    One per call, fed in order from the moment the call is answered. :meth:`feed` returns what each
    piece of audio decided (at most one :class:`Verdict` in the detector's life, and one :class:`Beep`);
    stop feeding once :attr:`done`.
    """

    def __init__(self, sample_rate: int = 8000) -> None:
        if sample_rate < 4000 or sample_rate % 50:
            raise ValueError(f"sample_rate must be a multiple of 50 Hz from 4000 Hz, not {sample_rate}")
        self.sample_rate = sample_rate
        # ms are counted in whole frames: the sample rate must give whole 20 ms frames
        self._frame_samples = sample_rate * FRAME_MS // 1000
        self._frame_bytes = 2 * self._frame_samples
        self._pending = b""
        self._ms = 0  # audio seen, in whole frames
        self._floor_db: float | None = None
        self._block_min = math.inf  # the quietest frame (not a tone) of the current block
        self._block_frames = 0
        self._blocks: list[float] = []  # the quietest of each of the last FLOOR_BLOCKS blocks
        self._utterance_start: int | None = None  # ms where the first utterance starts
        self._last_speech: int | None = None  # ms where speech was last heard (end of that frame)
        self._quiet_ms = 0  # quiet (neither speech nor tone) since the last speech
        self._words = 0
        self._tone: _Tone | None = None
        self._verdict: Verdict | None = None
        self._beep: Beep | None = None
        self._message_end_ms: int | None = None
        self._window_over = False

    # -- what it knows ------------------------------------------------------------------------------

    @property
    def verdict(self) -> Verdict | None:
        """Who answered, once decided."""
        return self._verdict

    @property
    def beep(self) -> Beep | None:
        """The machine's beep, once it has ended."""
        return self._beep

    @property
    def done(self) -> bool:
        """Nothing more to learn: stop feeding (a verdict, and a human, a beep, or the beep window over)."""
        if self._verdict is None:
            return False
        return self._verdict.answered_by != "machine" or self._beep is not None or self._window_over

    @property
    def message_end_ms(self) -> int | None:
        """A machine's greeting is over, ms after the answer: the beep's end, or the last speech when the
        greeting ended in silence (known :data:`GREETING_END_MS` later). None until then."""
        return self._message_end_ms

    @property
    def heard_ms(self) -> int:
        """Audio fed so far, in whole frames (ms from the answer)."""
        return self._ms

    # -- input --------------------------------------------------------------------------------------

    def feed(self, pcm: bytes) -> list[Verdict | Beep]:
        """16-bit little-endian mono PCM at ``sample_rate``, any length; what this audio decided.

        Audio fed once :attr:`done` is ignored.
        """
        out: list[Verdict | Beep] = []
        if self.done:
            return out
        data = self._pending + pcm if self._pending else pcm
        size = self._frame_bytes
        whole = len(data) - len(data) % size
        for at in range(0, whole, size):
            self._frame(data[at : at + size], out)
            if self.done:
                self._pending = b""
                return out
        self._pending = data[whole:]
        return out

    def words(self, text: str) -> list[Verdict | Beep]:
        """A final transcript of the callee's speech (a second cue: many words at once is a machine)."""
        self._words += len(_WORD.findall(text))
        if self._verdict is None and self._words >= MACHINE_WORDS:
            return [self._decide("machine", "many_words")]
        return []

    # -- the frame ----------------------------------------------------------------------------------

    def _frame(self, frame: bytes, out: list[Verdict | Beep]) -> None:
        start = self._ms
        self._ms += FRAME_MS
        if _BIG_ENDIAN:
            frame = audioop.byteswap(frame, 2)
        rms = audioop.rms(frame, 2)
        level = 20.0 * math.log10(rms) if rms > 0 else 0.0
        if self._floor_db is None:
            self._floor_db = min(level, FIRST_FLOOR_MAX_DB)
        floor = self._floor_db
        loud = level >= max(floor + SPEECH_OVER_FLOOR_DB, MIN_SPEECH_DB)
        hz = self._tone_hz(frame, rms) if loud else None
        speech = loud and hz is None
        if self._track_floor(level, hz is None):
            speech = speech and level >= self._floor_db + SPEECH_OVER_FLOOR_DB
            recent = self._ms - (FLOOR_BLOCKS + 1) * FLOOR_BLOCK_FRAMES * FRAME_MS
            if self._utterance_start is not None and self._utterance_start >= recent:
                # that "utterance" was the line's new noise: forget it
                self._utterance_start = self._last_speech = None
                self._quiet_ms = 0
        self._tones(start, hz, out)
        if self.done:
            return
        if speech:
            if self._utterance_start is None:
                self._utterance_start = start
            self._last_speech = self._ms
            self._quiet_ms = 0
        elif hz is None:
            self._quiet_ms += FRAME_MS
        if self._verdict is None:
            self._decide_from_speech(out)
        elif self._verdict.answered_by == "machine" and self._tone is None:
            self._greeting_over()

    def _track_floor(self, level: float, counts: bool) -> bool:
        """Move the noise floor after a frame at ``level`` dB (``counts``: not a tone); True when it
        stepped up to a louder line."""
        floor = self._floor_db if self._floor_db is not None else level
        # Down at once (halfway) to a quieter frame; up with the line's own wobble (within 3 dB); and
        # very slowly (0.5 dB/s) under anything louder, so weak speech does not lift the floor to itself.
        if level < floor:
            floor += 0.5 * (level - floor)
        elif level < floor + 3.0:
            floor += 0.05 * (level - floor)
        else:
            floor += 0.01
        if counts:
            self._block_min = min(self._block_min, level)
        self._block_frames += 1
        stepped = False
        if self._block_frames == FLOOR_BLOCK_FRAMES:
            if self._block_min < math.inf:
                self._blocks = [*self._blocks[1 - FLOOR_BLOCKS :], self._block_min]
            self._block_min, self._block_frames = math.inf, 0
            quietest = min(self._blocks, default=-math.inf)
            # 1.5 s without one frame near the floor: no speech is that even (words have gaps, stops
            # have silence), a line that got noisier is (digital silence until the answer, then hiss)
            if len(self._blocks) == FLOOR_BLOCKS and quietest > floor + SPEECH_OVER_FLOOR_DB:
                floor, stepped = quietest, True
        self._floor_db = floor
        return stepped

    def _decide_from_speech(self, out: list[Verdict | Beep]) -> None:
        first, last = self._utterance_start, self._last_speech
        if first is None or last is None:
            if self._ms >= SILENCE_MS:
                out.append(self._decide("unknown", "silence"))
            return
        length = last - first
        if length >= MACHINE_MIN_MS:
            out.append(self._decide("machine", "long_greeting"))
        elif self._tone is not None and self._tone.frames > 1:
            return  # a tone under way: wait for it to end (a beep) before calling the quiet a pause
        elif self._quiet_ms >= (PAUSE_MS if length <= HUMAN_MAX_MS else LONG_PAUSE_MS):
            if length < MIN_UTTERANCE_MS:
                self._utterance_start = self._last_speech = None  # a click: not the first utterance
                if self._ms >= SILENCE_MS:
                    out.append(self._decide("unknown", "silence"))
            else:
                out.append(self._decide("human", "short_greeting"))

    def _greeting_over(self) -> None:
        last = self._last_speech if self._last_speech is not None else 0
        if self._quiet_ms >= GREETING_END_MS:
            self._message_end_ms = last
            self._window_over = True
        elif self._ms >= BEEP_WINDOW_MS:
            self._window_over = True

    def _decide(self, answered_by: AnsweredBy, reason: str) -> Verdict:
        self._verdict = Verdict(answered_by, self._ms, reason)
        return self._verdict

    # -- tones --------------------------------------------------------------------------------------

    def _tones(self, start: int, hz: float | None, out: list[Verdict | Beep]) -> None:
        tone = self._tone
        if tone is not None and hz is not None and tone.takes(hz):
            tone.frames += 1
            tone.sum_hz += hz
            tone.end_ms = start + FRAME_MS
            tone.misses = 0
            if FAX_HZ[0] <= tone.mean_hz <= FAX_HZ[1] and tone.frames * FRAME_MS >= FAX_TONE_MS:
                if self._verdict is None:
                    out.append(self._decide("fax", "fax_tone"))
                self._tone = None
            return
        if tone is not None:
            if hz is None and tone.misses == 0 and tone.frames > 1:
                tone.misses = 1  # one odd frame inside a tone (a click, a phase jump) does not end it
                return
            self._tone = None
            self._tone_ended(tone, out)
        if hz is not None:
            self._tone = _Tone(start, hz)

    def _tone_ended(self, tone: _Tone, out: list[Verdict | Beep]) -> None:
        if tone.frames * FRAME_MS < BEEP_MIN_MS or self._beep is not None:
            return
        if self._verdict is None:
            out.append(self._decide("machine", "beep"))
        # (after any other verdict the detector is done: no audio reaches here)
        self._beep = Beep(tone.end_ms, round(tone.mean_hz))
        self._message_end_ms = tone.end_ms
        out.append(self._beep)

    def _tone_hz(self, frame: bytes, rms: int) -> float | None:
        """The frame's frequency when it is a pure tone, else None."""
        # The frequency from the autocorrelation at lags 1 and 2, which white noise leaves alone (a sine's
        # are r1 = a cos w and r2 = a cos 2w, so cos w = 2 r1 / (sqrt(r2^2 + 8 r1^2) - r2)); findfactor
        # gives each over the same energy, which cancels. The two-tap fit's own least-squares factor
        # would be pulled toward 2 kHz by noise (+34 Hz at 440 Hz and 20 dB).
        head = frame[:-4]
        if audioop.rms(head, 2) == 0:
            return None
        r1 = audioop.findfactor(frame[2:-2], head)
        r2 = audioop.findfactor(frame[4:], head)
        den = math.sqrt(r2 * r2 + 8.0 * r1 * r1) - r2
        if den <= 1e-12:
            return None
        factor = 4.0 * r1 / den  # 2 cos(w)
        if not -2.0 < factor < 2.0:
            return None
        half = audioop.mul(frame, 2, 0.5)  # room for the sums below in 16 bits
        mid = half[2:-2]
        both = audioop.add(half[4:], half[:-4], 2)  # x[n+1] + x[n-1]: 2 cos(w) x[n] for a sine
        residue = audioop.add(both, audioop.mul(mid, 2, -factor), 2)
        if audioop.rms(residue, 2) > TONE_RESIDUE * audioop.rms(mid, 2):
            return None
        hz = math.acos(factor / 2.0) * self.sample_rate / (2.0 * math.pi)
        if not BEEP_MIN_HZ <= hz <= BEEP_MAX_HZ:
            return None
        crossings_hz = audioop.cross(frame, 2) * self.sample_rate / (2.0 * self._frame_samples)
        if abs(crossings_hz - hz) > max(60.0, 0.1 * hz):
            return None
        return hz if self._share(frame, rms, hz) >= TONE_SHARE else None

    def _share(self, frame: bytes, rms: int, hz: float) -> float:
        """The share of the frame's energy on its projection onto a sine and a cosine at ``hz`` (to
        5 Hz): a Goertzel filter's output power over the frame's, computed by ``audioop.findfactor``."""
        c, s, cc, ss = _references(self.sample_rate, self._frame_samples, round(hz / 5.0) * 5)
        fc = audioop.findfactor(frame, c)  # <x, cos> / <cos, cos>
        fs = audioop.findfactor(frame, s)
        energy = float(rms) * rms * self._frame_samples
        return (fc * fc * cc + fs * fs * ss) / energy if energy else 0.0


@functools.lru_cache(maxsize=2048)
def _references(sample_rate: int, samples: int, hz: int) -> tuple[bytes, bytes, float, float]:
    """A frame of cosine and of sine at ``hz`` (16-bit PCM, native order, as audioop reads it) and their
    energies: tables shared by every call's detector (at most ~700 frequencies in the tone band)."""
    w = 2.0 * math.pi * hz / sample_rate
    cos = [round(16000 * math.cos(w * i)) for i in range(samples)]
    sin = [round(16000 * math.sin(w * i)) for i in range(samples)]
    return (
        b"".join(v.to_bytes(2, sys.byteorder, signed=True) for v in cos),
        b"".join(v.to_bytes(2, sys.byteorder, signed=True) for v in sin),
        float(sum(v * v for v in cos)),
        float(sum(v * v for v in sin)),
    )
