"""Word error rate of the embedded engine on the telephone corpus, stage by stage (not a test).

    .venv/bin/python benchmarks/bench_wer.py [--model tiny.en|base] [--fast] [--stages whole,cuts,vad,bridge]
                                             [--threads 1] [--calls N] [--details details.json]

The corpus is tests/corpus/ (twelve calls, 48 sentences, five voices the suite never hears: see
tests/corpus/make_corpus.py). Every figure is ``--model`` (Whisper tiny.en by default, or multilingual
base) as the bridge runs it (:class:`bridge.local_stt.engine.WhisperRecognizer`: the pinned model files,
int8, beam 5, word timestamps, English as the bridge's default profile asks (no language detection),
``--threads`` CPU threads per decode: the bridge's engine uses 1; with
``--context``, each piece after the first with the call's text so far as Whisper's prompt, as the engine
gives it with ``--history-prompt``, :mod:`bridge.local_stt.context`), on each call's 8 kHz mu-law decoded
and brought to 16 kHz by one of two resamplers:

* ``bridge``: the bridge's own, :class:`bridge.local_stt.audio_in.InputDecoder` (mu-law table, then
  :class:`bridge.audio.RateConverter`, the polyphase windowed sinc), exactly what the engine does;
* ``linear``: a simple reference, the same mu-law samples and numpy linear interpolation
  (``np.interp`` at half-sample steps).

Stages:

* ``whole``: each call decoded in one piece (faster-whisper windows a call over 30 s itself);
* ``cuts``: each sentence decoded alone, cut at its known span from corpus.txt with 0.2 s either side
  (never past the middle of the pause to the next sentence): perfect cuts;
* ``vad``: the engine's own cutting, offline: Silero VAD and :class:`bridge.local_stt.segmenter.Segmenter`
  with the settings a call on the embedded defaults gets (threshold 0.5, endpointing 0.3 s, at most
  15 s), each utterance decoded alone. It is the end to end stage without the sockets, so it runs under
  both resamplers and shows whether the bridge loses words in the cutting or further on;
* ``bridge``: end to end, each call played as a Twilio call (:func:`bridge.tools.player.play_call`)
  into ``bridge serve`` on its embedded defaults (no Gladia settings), the ``utterance.final`` texts
  collected by a webhook sink here. Paced in real time (20 ms frames, as a phone does) unless
  ``--fast`` (as fast as the socket takes it, the bridge's ``server.max_audio_speed = 0``). The engine
  resamples with its own resampler only (a reference resampler there would need an engine change),
  so this row has no ``linear`` figure. In real time it also gives the delay from the end of each
  sentence's audio at the phone to its final at the webhook.

Scoring: a call's transcript (its pieces joined in order) against its sentences, as words after one
normaliser applied to both sides (:func:`score_words`): lower case, punctuation dropped, contractions
expanded, "$49.99" as "49 dollars and 99 cents", ordinals as numbers, number words as numbers
("forty nine" = "49", "two hundred and ten" = "210"), and every number as its single digits, so
"seven three one" = "731" = "7 3 1" and "nineteen eighty seven" = "1987". A stage's WER is the sum of
the calls' word edits over the sum of their reference words. ``wer_digits_only`` in the JSON line
scores with :func:`bridge.tools.speech.normalised_words` instead (what the suite's tests use: digit
names only, so "forty nine" against "49" counts as errors).

RTF: decode wall time over audio seconds for the offline stages; for ``bridge``, wall time from the
first frame to ``call.ended`` over audio seconds (about 1 in real time). CPU RTF: the process's CPU
time (every thread) over audio seconds, what sizes a machine: for the offline stages this process's
during the decodes (and the VAD), for ``bridge`` the bridge process's (the embedded engine's decodes,
VAD and everything else of the calls) from its first call to its last. Prints a table, the per-call
figures, the machine (CPU model, cores, load), then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.audio import samples_to_float
from bridge.local_stt.audio_in import InputDecoder
from bridge.local_stt.context import CallContext
from bridge.local_stt.engine import SileroVad, WhisperRecognizer
from bridge.local_stt.live import silero_threshold
from bridge.local_stt.segmenter import Segmenter, UtteranceAudio
from bridge.loop import serving
from bridge.tools.player import play_call
from bridge.tools.runs import cpu_model
from bridge.tools.speech import normalised_words
from tests.corpus.make_corpus import HERE as CORPUS_DIR
from tests.corpus.make_corpus import Sentence, read_corpus
from tests.corpus.scoring import edits, score_words
from tests.support.bridge_process import start_bridge
from tests.support.process import minimal_env

RATE_IN = 8000
RATE = 16000
CUT_PAD = 0.2  # seconds around a sentence's span in a perfect cut
STAGES = ("whole", "cuts", "vad", "bridge")
RESAMPLERS = ("bridge", "linear")
STAGE_NAMES = {
    "whole": "whole-file decode",
    "cuts": "perfect cuts (known spans)",
    "vad": "engine's VAD cuts, offline",
    "bridge": "bridge serve end to end",
}

# -- audio ---------------------------------------------------------------------------------------------


def to_16k(ulaw: bytes, resampler: str) -> np.ndarray:
    if resampler == "bridge":
        decoder = InputDecoder("wav/ulaw", 8, RATE_IN, 1)
        return np.concatenate((decoder.feed(ulaw), decoder.flush())).astype(np.float32)
    x = samples_to_float(ulaw, "ulaw")
    t = np.arange(2 * len(x)) / 2
    out: np.ndarray = np.interp(t, np.arange(len(x)), x).astype(np.float32)
    return out


def perfect_cuts(sentences: list[Sentence], seconds: float) -> list[tuple[float, float]]:
    out = []
    for i, s in enumerate(sentences):
        lo = s.start - CUT_PAD if i == 0 else max(s.start - CUT_PAD, (sentences[i - 1].end + s.start) / 2)
        hi = s.end + CUT_PAD if i + 1 == len(sentences) else min(s.end + CUT_PAD, (s.end + sentences[i + 1].start) / 2)
        out.append((max(0.0, lo), min(seconds, hi)))
    return out


def vad_utterances(vad: SileroVad, audio: np.ndarray) -> list[UtteranceAudio]:
    """The engine's cutting of one channel as a call on the embedded defaults gets it (see LiveSession)."""
    stream = vad.stream()
    segmenter = Segmenter(threshold=silero_threshold(0.6), endpointing=0.3, max_duration=15)
    events = []
    for start in range(0, len(audio), 3200):  # 200 ms at a time, as a stream would come
        for frame, prob in stream.feed(audio[start : start + 3200]):
            events += segmenter.push(frame, prob)
    events += segmenter.flush()
    return [e for e in events if isinstance(e, UtteranceAudio)]


# -- results -------------------------------------------------------------------------------------------


@dataclass
class CallResult:
    pieces: list[str]
    spans: list[tuple[float, float]] = field(default_factory=list)  # where each piece was cut (speech)
    latencies: list[float] = field(default_factory=list)


@dataclass
class StageRun:
    stage: str
    resampler: str
    calls: dict[str, CallResult] = field(default_factory=dict)
    wall: float = 0.0
    cpu: float = 0.0  # CPU seconds of the process that decoded (every thread)

    def score(self, corpus: dict[str, list[Sentence]], words: Callable[[str], list[str]]) -> tuple[int, int]:
        errors = total = 0
        for name, sentences in corpus.items():
            ref = words(" ".join(s.text for s in sentences))
            errors += edits(ref, words(" ".join(self.calls[name].pieces)))
            total += len(ref)
        return errors, total

    def call_wer(self, name: str, sentences: list[Sentence]) -> float:
        ref = score_words(" ".join(s.text for s in sentences))
        return edits(ref, score_words(" ".join(self.calls[name].pieces))) / len(ref)

    def cuts_inside_sentences(self, corpus: dict[str, list[Sentence]]) -> int:
        """Boundaries between two pieces that fall inside a sentence's speech (more than 0.1 s in)."""
        n = 0
        for name, sentences in corpus.items():
            spans = self.calls[name].spans
            for (_, end), (start, _) in itertools.pairwise(spans):
                cut = (end + start) / 2
                n += any(s.start + 0.1 < cut < s.end - 0.1 for s in sentences)
        return n


def in_context(recognizer: WhisperRecognizer, pieces: list[np.ndarray], context: bool) -> list[str]:
    """Each piece decoded alone, in order; with ``context``, as the engine does with ``--history-prompt``:
    the text so far as Whisper's prompt (:class:`bridge.local_stt.context.CallContext`, one channel)."""
    call = CallContext(1, history=True)
    texts = []
    for piece in pieces:
        text = recognizer.transcribe(piece, "en", call.prompt(0) if context else None).text
        call.heard(0, text)
        texts.append(text)
    return texts


def run_offline(
    stage: str,
    resampler: str,
    corpus: dict[str, list[Sentence]],
    recognizer: WhisperRecognizer,
    vad: SileroVad | None,
    context: bool = False,
) -> StageRun:
    run = StageRun(stage, resampler)
    for name, sentences in corpus.items():
        ulaw = (CORPUS_DIR / name).read_bytes()
        audio = to_16k(ulaw, resampler)
        t0, c0 = time.perf_counter(), time.process_time()
        if stage == "whole":
            result = CallResult([recognizer.transcribe(audio, "en").text])
        elif stage == "cuts":
            cuts = perfect_cuts(sentences, len(ulaw) / RATE_IN)
            pieces = [audio[int(a * RATE) : int(b * RATE)] for a, b in cuts]
            result = CallResult(in_context(recognizer, pieces, context), cuts)
        else:
            assert vad is not None
            utterances = vad_utterances(vad, audio)
            pieces = [u.audio for u in utterances]
            result = CallResult(in_context(recognizer, pieces, context), [(u.start, u.end) for u in utterances])
        run.wall += time.perf_counter() - t0
        run.cpu += time.process_time() - c0
        run.calls[name] = result
    return run


# -- end to end ----------------------------------------------------------------------------------------


class Sink:
    """The bot's webhook: every event, with when it arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        self.events.append((time.monotonic(), json.loads(await request.read())))
        return web.Response(status=204)

    def of_call(self, call_sid: str, type_: str) -> list[tuple[float, dict[str, Any]]]:
        return [
            (t, e) for t, e in self.events if e.get("type") == type_ and e.get("call", {}).get("call_sid") == call_sid
        ]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_bridge(corpus: dict[str, list[Sentence]], fast: bool, model: str) -> StageRun:
    run = StageRun("bridge", "bridge")
    sink = Sink()
    with tempfile.TemporaryDirectory(prefix="bench-wer-") as tmp:
        env = {"BRIDGE_LOCAL_STT_MODEL": model}
        if fast:
            config = Path(tmp) / "fast.toml"
            config.write_text("[server]\nmax_audio_speed = 0\n")
            env["BRIDGE_CONFIG"] = str(config)
        async with serving(sink.app) as hook:
            bridge = await start_bridge(
                minimal_env(BOT_WEBHOOK_URL=hook + "/hook", **env), log_format=None, startup=60.0, healthy_only=True
            )
            try:
                cpu_before = process_cpu(bridge.pid)  # (after the model's loading)
                for n, name in enumerate(corpus):
                    ulaw = (CORPUS_DIR / name).read_bytes()
                    sent_at: list[float] = []
                    call_sid = f"CA{n:032d}"
                    report = await play_call(
                        bridge.ws + "/twilio/stream",
                        ulaw,
                        realtime=not fast,
                        call_sid=call_sid,
                        on_frame=lambda _i, t: sent_at.append(t),  # noqa: B023 (used within the iteration)
                    )
                    deadline = time.monotonic() + 120
                    while not sink.of_call(call_sid, "call.ended") and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    run.wall += sink.of_call(call_sid, "call.ended")[0][0] - report.started_at
                    finals = sorted(sink.of_call(call_sid, "utterance.final"), key=lambda te: te[1].get("sequence", 0))
                    result = CallResult([e["utterance"]["text"] for _, e in finals])
                    result.spans = [(e["utterance"]["start"], e["utterance"]["end"]) for _, e in finals]
                    if not fast:
                        result.latencies = [
                            t - sent_at[min(int(e["utterance"]["end"] / 0.02), len(sent_at) - 1)] for t, e in finals
                        ]
                    run.calls[name] = result
                run.cpu = process_cpu(bridge.pid) - cpu_before
            finally:
                await bridge.stop()
    return run


# -- report --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ct2": version("ctranslate2"),
        "faster_whisper": version("faster-whisper"),
        "ct2_force_cpu_isa": os.environ.get("CT2_FORCE_CPU_ISA", "unset"),
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(
    stages: list[str],
    fast: bool,
    threads: int,
    calls: int | None,
    details: Path | None,
    context: bool = False,
    model: str = "tiny.en",
) -> None:
    sentences = read_corpus()
    if calls is not None:  # the first few calls only (a quick look)
        names = sorted({s.file for s in sentences})[:calls]
        sentences = [s for s in sentences if s.file in names]
    corpus: dict[str, list[Sentence]] = {}
    for s in sentences:
        corpus.setdefault(s.file, []).append(s)
    seconds = sum((CORPUS_DIR / name).stat().st_size for name in corpus) / RATE_IN
    load_before = os.getloadavg()
    offline = [s for s in stages if s != "bridge"]
    recognizer = WhisperRecognizer(model, cpu_threads=threads) if offline else None
    vad = SileroVad() if "vad" in offline else None
    runs: list[StageRun] = []
    for stage in stages:
        if stage == "bridge":
            runs.append(asyncio.run(run_bridge(corpus, fast, model)))
            continue
        assert recognizer is not None
        for resampler in RESAMPLERS:
            runs.append(run_offline(stage, resampler, corpus, recognizer, vad, context))
            print(f"  {stage} / {resampler}: {runs[-1].wall:.1f} s, {runs[-1].cpu:.1f} s CPU", file=sys.stderr)
    load_after = os.getloadavg()

    figures: dict[str, dict[str, Any]] = {}
    for run in runs:
        errors, total = run.score(corpus, score_words)
        old_errors, old_total = run.score(corpus, normalised_words)
        lat = [x for r in run.calls.values() for x in r.latencies]
        figures.setdefault(run.stage, {})[run.resampler] = {
            "wer": round(errors / total, 4),
            "errors": errors,
            "words": total,
            "wer_digits_only": round(old_errors / old_total, 4),
            "rtf": round(run.wall / seconds, 3),
            "cpu_rtf": round(run.cpu / seconds, 3),
            "pieces": sum(len(r.pieces) for r in run.calls.values()),
            "cuts_inside_sentences": run.cuts_inside_sentences(corpus) if run.stage != "whole" else 0,
            **(
                {"latency_median_s": round(statistics.median(lat), 3), "latency_p90_s": round(pct(lat, 0.9), 3)}
                if lat
                else {}
            ),
        }

    if details is not None:  # every piece's text and span, per stage, for a closer look
        details.write_text(
            json.dumps(
                {
                    "sentences": [asdict(s) for s in sentences],
                    "runs": [
                        {
                            "stage": r.stage,
                            "resampler": r.resampler,
                            "calls": {name: asdict(c) for name, c in r.calls.items()},
                        }
                        for r in runs
                    ],
                },
                indent=1,
            )
        )
    info = machine()
    print(f"\ncorpus: {len(corpus)} calls, {len(sentences)} sentences, {seconds:.1f} s of 8 kHz mu-law (tests/corpus)")
    print(
        f"model: faster-whisper {info['faster_whisper']} {model} int8 beam 5 (English), "
        f"{threads} thread(s) per decode; offline pieces {'with' if context else 'without'} the call's context "
        "as prompt"
    )
    print(
        f"\n{'stage':<30} {'WER bridge rs':>14} {'WER linear':>11} {'RTF':>11} {'CPU RTF':>11} {'pieces':>7} "
        f"{'cuts in sent.':>14}"
    )
    for stage in stages:
        row = figures[stage]
        b, lin = row.get("bridge"), row.get("linear")
        rtf = "/".join(f"{r['rtf']:.3f}" for r in (b, lin) if r)
        cpu_rtf = "/".join(f"{r['cpu_rtf']:.3f}" for r in (b, lin) if r)
        b_wer = f"{b['wer']:.1%}" if b else "-"
        lin_wer = f"{lin['wer']:.1%}" if lin else "n/a"
        pieces = str(b["pieces"]) if b else "-"
        inside = str(b["cuts_inside_sentences"]) if b else "-"
        print(f"{STAGE_NAMES[stage]:<30} {b_wer:>14} {lin_wer:>11} {rtf:>11} {cpu_rtf:>11} {pieces:>7} {inside:>14}")
        if b and "latency_median_s" in b:
            median, p90 = b["latency_median_s"], b["latency_p90_s"]
            print(f"{'':<30} end of speech -> webhook: median {median:.2f} s, p90 {p90:.2f} s")
    print(f"(sentences: {len(sentences)}; WER with digit names only, as the tests score:", end="")
    print(", ".join(f" {s}/{r} {f['wer_digits_only']:.1%}" for s, row in figures.items() for r, f in row.items()) + ")")

    print(f"\nper call, bridge resampler ({', '.join(stages)}):")
    bridge_runs = {r.stage: r for r in runs if r.resampler == "bridge"}
    for name, sents in corpus.items():
        cells = "  ".join(f"{bridge_runs[s].call_wer(name, sents):6.1%}" for s in stages if s in bridge_runs)
        print(f"  {name}  {cells}  {sents[0].voice:<34} {sents[0].condition}")

    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores; ctranslate2 {info['ct2']}, CT2_FORCE_CPU_ISA "
        f"{info['ct2_force_cpu_isa']}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        json.dumps(
            {
                "bench": "wer",
                "model": model,
                "calls": len(corpus),
                "sentences": len(sentences),
                "audio_seconds": round(seconds, 1),
                "fast": fast,
                "threads": threads,
                "stages": figures,
                "machine": info,
                "load_before": round(load_before[0], 2),
                "load_after": round(load_after[0], 2),
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", choices=("tiny.en", "base"), default="tiny.en", help="the local engine's model")
    parser.add_argument("--fast", action="store_true", help="end to end as fast as it goes (max_audio_speed 0)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per decode (the engine uses 1)")
    parser.add_argument("--calls", type=int, default=None, help="only the first N calls of the corpus")
    parser.add_argument("--details", type=Path, default=None, help="write every piece's text and span here (JSON)")
    parser.add_argument(
        "--context", action="store_true", help="offline stages: the call's text so far as each piece's prompt"
    )
    args = parser.parse_args()
    chosen = [s for s in args.stages.split(",") if s]
    if unknown := [s for s in chosen if s not in STAGES]:
        parser.error(f"unknown stage {unknown[0]!r}")
    main(chosen, args.fast, args.threads, args.calls, args.details, args.context, args.model)
