"""The sample call shipped with the bridge, and word error rate as the demo and the tests score it."""

from __future__ import annotations

import re
from importlib import resources

from bridge.wav import read_wav, to_ulaw_8k


def sample_call() -> tuple[bytes, list[str]]:
    """The shipped sample call (8 kHz mu-law) and the sentences spoken in it."""
    folder = resources.files("bridge") / "samples"
    wav = read_wav((folder / "demo_call.wav").read_bytes())
    text = (folder / "demo_call.txt").read_text()
    return to_ulaw_8k(wav), [line for line in text.splitlines() if line.strip()]


_DIGIT_NAMES = {
    name: str(i)
    for i, name in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
}


def normalised_words(text: str) -> list[str]:
    """Words for scoring: lower case, punctuation dropped, and numbers as single digits on both
    sides, so "four five six", "4, 5, 6" and "456" all score as ``4 5 6`` (Whisper writes spoken
    digits either way, and that choice is not a recognition error)."""
    out: list[str] = []
    for word in re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split():
        if word in _DIGIT_NAMES:
            out.append(_DIGIT_NAMES[word])
        elif word.isdigit():
            out.extend(word)
        else:
            out.append(word)
    return out


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Levenshtein distance over words / reference length."""
    prev = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / max(1, len(reference))


def speech_turns(ulaw: bytes, min_gap: float = 0.6) -> list[tuple[bytes, float]]:
    """The sample call cut at its pauses: one piece per sentence (with a little silence either side)
    and, for each, where its speech ends within the piece (seconds)."""
    import numpy as np

    from bridge.audio import samples_to_float

    x = samples_to_float(ulaw, "ulaw")
    frame = 160
    rms = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    voiced = rms > max(0.01, float(np.percentile(rms, 90)) * 0.1)
    spans: list[list[int]] = []
    for i, v in enumerate(voiced):
        if not v:
            continue
        if spans and i - spans[-1][1] <= min_gap / 0.02:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    pieces = []
    for start, end in spans:
        a, b = max(0, start - 10) * frame, min(len(voiced), end + 16) * frame
        pieces.append((ulaw[a:b], ((end + 1) * frame - a) / 8000))
    return pieces
