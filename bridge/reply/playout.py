"""The playout clock (pure): what the bridge sends to the caller, when, and what the caller heard.

The bridge owns the clock. Audio goes to the carrier paced at real time with a small ``lead`` (about
300 ms), never dumped whole into the carrier's buffer, so that at any moment the bridge knows what
has been heard to within the lead, can pause on any carrier (stop sending, ``clear`` the lead), and
a ``clear`` never throws away more than the lead.

Units. A :class:`Segment` is one sentence of a ``say`` (or a whole ``play``, or one piece of a bot's
streamed audio), already in the carrier's outbound format. Segments follow each other in one *run*
while audio keeps coming; a run's position 0 is played at ``run_start`` and its audio is assumed to
play continuously from there. ``heard(now) = min(sent, now - run_start)``. A carrier mark is sent
after every segment's last chunk; its echo means the segment played to the end, and moves the
clock onto the carrier's (``run_start = now - segment end``): jitter buffers and network delay are
measured, not guessed. A mark echoed after a ``clear`` means cleared, not played, and is ignored.

What comes out of :meth:`Playout.tick` and the other methods is a list of :data:`Output`: messages
to send (:class:`SendAudio`, :class:`SendMark`, :class:`SendClear`) and what to tell the bot
(:class:`PlaybackStarted`, :class:`PlaybackFinished`, :class:`PlaybackInterrupted`,
:class:`BotMarkPlayed`), plus :class:`HangupNow` when a ``hangup after=playback`` is due. Every
action ends with exactly one ``PlaybackFinished`` or ``PlaybackInterrupted`` (a queued action that
never started is interrupted with ``played_ms`` 0).

Heard text: whole sentences before the cut are exact (each sentence is its own segment); in the
cut sentence, words whose end the caller heard when the TTS gave word times, else the same share of
the words as of the sentence's audio.

Carriers without marks (jambonz/FreeSWITCH forks) are paced the same way; a segment counts as played
when the clock says so. Where marks exist, a segment whose mark has not come back ``mark_grace``
seconds after the clock says it ended counts as played too (counted in ``missing_marks``): a carrier
that loses a mark must not hold a hang-up forever.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from bridge.reply.actions import Interrupt

InterruptReason = Literal["speech", "dtmf", "stop", "replace", "hangup", "transfer", "machine"]
MAX_CLEARED_MARKS = 256
UNDERRUN_MS = 40.0  # a gap in an action's audio longer than this is an underrun


@dataclass(frozen=True, slots=True)
class WordTime:
    word: str
    start: float  # seconds within the segment
    end: float


@dataclass(slots=True)
class Segment:
    """One unit of playback, in the carrier's outbound format."""

    action_id: str
    audio: bytes
    text: str = ""  # the sentence (empty for played audio)
    words: tuple[WordTime, ...] = ()  # word times within the segment, when the TTS gives them
    last: bool = True  # the action's last segment
    interrupt: Interrupt = "speech"
    bot_mark: str | None = None  # a bot `mark` action: no audio, a playback.mark when reached
    # filled in by the playout
    start_ms: float = 0.0  # position of its first byte in its run
    sent: int = 0  # bytes sent so far
    mark: str | None = None  # the carrier mark that follows it, once sent


# -- what comes out --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendAudio:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendMark:
    name: str


@dataclass(frozen=True, slots=True)
class SendClear:
    pass


@dataclass(frozen=True, slots=True)
class PlaybackStarted:
    action_id: str


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    action_id: str
    played_ms: int


@dataclass(frozen=True, slots=True)
class PlaybackInterrupted:
    action_id: str
    played_ms: int
    heard_text: str
    reason: InterruptReason


@dataclass(frozen=True, slots=True)
class BotMarkPlayed:
    name: str


@dataclass(frozen=True, slots=True)
class HangupNow:
    pass


@dataclass(frozen=True, slots=True)
class HandOverNow:
    """A ``transfer after=playback`` is due: everything queued before it has played."""

    action_id: str


Output = (
    SendAudio
    | SendMark
    | SendClear
    | PlaybackStarted
    | PlaybackFinished
    | PlaybackInterrupted
    | BotMarkPlayed
    | HangupNow
    | HandOverNow
)


@dataclass(slots=True)
class _ActionState:
    played_ms: float = 0.0  # of segments confirmed or cut
    sentences: list[str] = field(default_factory=list)  # heard whole
    started: bool = False
    segments_left: int = 0  # queued or unconfirmed
    last_seen: bool = False  # its last segment has been added
    interrupt: Interrupt = "speech"  # its latest segment's (what may end it while it waits for more)


@dataclass(slots=True)
class PlayoutCounters:
    cleared_bytes: int = 0  # sent, then cleared before it played
    underruns: int = 0  # an action's audio ran dry before its last segment came
    missing_marks: int = 0


class Playout:
    """See the module docstring. ``bytes_per_ms`` and ``frame_bytes`` describe the outbound format;
    ``min_bytes`` is the carrier's smallest message. Times are seconds on one monotonic clock."""

    def __init__(
        self,
        *,
        bytes_per_ms: float,
        frame_bytes: int,
        silence_byte: int,
        min_bytes: int = 0,
        lead_ms: float = 300.0,
        chunk_ms: float = 100.0,
        marks: bool = True,
        mark_grace: float = 10.0,
    ) -> None:
        self.bytes_per_ms = bytes_per_ms
        self.frame_bytes = frame_bytes
        self.silence_byte = silence_byte
        self.min_bytes = max(min_bytes, frame_bytes)
        self.lead_ms = lead_ms
        self.chunk_bytes = max(self.min_bytes, round(chunk_ms * bytes_per_ms) // frame_bytes * frame_bytes)
        self.marks = marks
        self.mark_grace = mark_grace
        self.counters = PlayoutCounters()
        self._queue: deque[Segment] = deque()  # not yet fully sent
        self._unconfirmed: deque[Segment] = deque()  # fully sent, end not yet confirmed
        self._actions: dict[str, _ActionState] = {}
        self._run_start: float | None = None  # None: idle (nothing playing)
        self._run_sent_ms = 0.0
        self._paused = False
        # marks whose echo, if it comes, means nothing (cleared, or given up on); Plivo never echoes a
        # cleared checkpoint, so the oldest are forgotten past MAX_CLEARED_MARKS
        self._cleared_marks: dict[str, None] = {}
        self._mark_ids = itertools.count(1)
        self._hangup_pending = False
        self._handover_pending: str | None = None  # a transfer's id, once what is queued has played
        self._after_clear = False
        # the texts of the last 3 sentences that began playing (a list: an empty deque costs 760 bytes)
        self._recent: list[str] = []
        self._waiting_marks = 0  # bot marks queued or unconfirmed

    # -- state -------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def run_started_at(self) -> float | None:
        """When the audio playing now started without a break (None when nothing plays)."""
        return self._run_start

    @property
    def playing(self) -> bool:
        """Audio is queued or in the carrier's hands."""
        return bool(self._queue or self._unconfirmed)

    @property
    def current_action(self) -> str | None:
        """The action the caller hears now (or will next)."""
        seg = self._unconfirmed[0] if self._unconfirmed else (self._queue[0] if self._queue else None)
        return seg.action_id if seg is not None else None

    @property
    def current_interrupt(self) -> Interrupt | None:
        seg = self._unconfirmed[0] if self._unconfirmed else (self._queue[0] if self._queue else None)
        return seg.interrupt if seg is not None else None

    @property
    def queued_bytes(self) -> int:
        """Audio queued and not yet sent."""
        return sum(len(s.audio) - s.sent for s in self._queue)

    @property
    def queued_actions(self) -> list[str]:
        return list(dict.fromkeys(s.action_id for s in itertools.chain(self._unconfirmed, self._queue)))

    @property
    def live_actions(self) -> frozenset[str]:
        """The actions the playout tracks: queued, playing, or a stream between two pieces. Each one
        leaves when it ends (finished or interrupted), so this is bounded by what is live."""
        return frozenset(self._actions)

    @property
    def waiting_marks(self) -> int:
        """Bot marks queued or waiting for their echo."""
        return self._waiting_marks

    def next_due(self) -> float | None:
        """When :meth:`tick` next has something to do (send a chunk, confirm by the clock, hang up),
        on the caller's clock; None when only an input can change anything."""
        if (self._hangup_pending or self._handover_pending is not None) and not self.playing:
            return 0.0
        times: list[float] = []
        start = self._run_start
        if self._queue and not self._paused:
            seg = self._queue[0]
            if start is None or not seg.audio:
                return 0.0
            left = len(seg.audio) - seg.sent
            n = min(self.chunk_bytes, left)
            if left - n and left - n < self.min_bytes:
                n = left
            times.append(start + (self._run_sent_ms + self._ms(n) - self.lead_ms) / 1000.0)
        if self._unconfirmed and start is not None:
            seg = self._unconfirmed[0]
            grace = self.mark_grace if self.marks else 0.0
            times.append(start + (seg.start_ms + self._ms(len(seg.audio))) / 1000.0 + grace)
        return min(times) if times else None

    def heard_ms(self, now: float) -> float:
        """Milliseconds of the current run the caller has heard."""
        if self._run_start is None:
            return 0.0
        return max(0.0, min(self._run_sent_ms, (now - self._run_start) * 1000.0))

    def recent_text(self, now: float) -> str:
        """The sentences the caller may be hearing or just heard (the echo guard compares caller words
        with these): the last ones that began playing, whole, and the one playing now."""
        current = self.current_text(now)
        recent = list(self._recent)
        return " ".join(recent + ([current] if current and current not in recent else []))

    def current_text(self, now: float) -> str:
        """The sentence the caller hears now ("" when none): the echo guard compares speech with it."""
        heard = self.heard_ms(now)
        for seg in itertools.chain(self._unconfirmed, self._queue):
            if seg.start_ms + self._ms(len(seg.audio)) >= heard:
                return seg.text
        return ""

    # -- input -------------------------------------------------------------------------------

    def add(self, segment: Segment, now: float) -> list[Output]:
        """Queue a segment (its action's segments in order); its audio is padded to the carrier's unit."""
        state = self._actions.setdefault(segment.action_id, _ActionState())
        state.segments_left += 1
        state.last_seen = state.last_seen or segment.last
        state.interrupt = segment.interrupt
        if segment.bot_mark is not None:
            self._waiting_marks += 1
        segment.audio = self._padded(segment.audio) if segment.bot_mark is None else b""
        self._queue.append(segment)
        return self.tick(now)

    def hangup_after_playback(self, now: float) -> list[Output]:
        """Hang up once everything queued has played (confirmed by the carrier's marks)."""
        self._hangup_pending = True
        return self.tick(now)

    def hand_over_after_playback(self, action_id: str, now: float) -> list[Output]:
        """A transfer once everything queued has played (confirmed by the carrier's marks)."""
        self._handover_pending = action_id
        return self.tick(now)

    def tick(self, now: float) -> list[Output]:
        """Send what the clock allows, confirm by the clock what it may; call every ~20-100 ms."""
        out: list[Output] = []
        self._confirm_by_clock(now, out)
        if not self._paused:
            self._send(now, out)
        if self._hangup_pending and not self.playing:
            self._hangup_pending = False
            out.append(HangupNow())
        if self._handover_pending is not None and not self.playing:
            out.append(HandOverNow(self._handover_pending))
            self._handover_pending = None
        return out

    def mark_reached(self, name: str, now: float) -> list[Output]:
        """The carrier echoed a mark: the segment before it played to the end."""
        if name in self._cleared_marks:
            del self._cleared_marks[name]
            return []
        out: list[Output] = []
        for i, seg in enumerate(self._unconfirmed):
            if seg.mark == name:
                if self._run_start is not None:  # the carrier's clock: this segment ended now
                    self._run_start = now - (seg.start_ms + self._ms(len(seg.audio))) / 1000.0
                for _ in range(i + 1):
                    self._confirm(self._unconfirmed.popleft(), out)
                break
        out += self.tick(now)
        return out

    def pause(self, now: float) -> list[Output]:
        """Stop sending and clear what the carrier holds (caller speech over interruptible audio);
        :meth:`resume` plays on from what was heard."""
        if self._paused or not self.playing:
            return []
        self._paused = True
        heard = self.heard_ms(now)
        out = self._rewind(heard, out=[])
        return out

    def resume(self, now: float) -> list[Output]:
        """Play on from where :meth:`pause` stopped (a false interruption)."""
        if not self._paused:
            return []
        self._paused = False
        return self.tick(now)

    def interrupt(
        self, now: float, reason: InterruptReason, *, actions: set[str] | None = None, only_interruptible: bool = True
    ) -> list[Output]:
        """End actions now: the current one reports what was heard, queued ones ``played_ms`` 0, and a
        stream waiting for its next piece what it played (it is forgotten: its state would otherwise
        stay for the whole call).

        ``actions``: which (default: every action); ``only_interruptible``: keep segments
        whose ``interrupt`` does not allow ``reason`` (``none`` ones survive a barge-in)."""
        heard = self.heard_ms(now) if not self._paused else None
        out: list[Output] = []
        if heard is not None and self.playing:
            self._rewind(heard, out)
        # now nothing is unconfirmed; the queue starts at the first unheard byte
        keep: deque[Segment] = deque()
        ended: dict[str, None] = {}
        for seg in self._queue:
            chosen = actions is None or seg.action_id in actions
            if chosen and (not only_interruptible or _allows(seg.interrupt, reason)):
                ended.setdefault(seg.action_id, None)
                if seg.bot_mark is not None:
                    self._waiting_marks -= 1
            else:
                keep.append(seg)
        self._queue = keep
        kept = {seg.action_id for seg in keep}
        for action_id, waiting in self._actions.items():  # streams between two pieces: nothing queued
            if action_id in kept or action_id in ended or not (actions is None or action_id in actions):
                continue
            if not only_interruptible or _allows(waiting.interrupt, reason):
                ended.setdefault(action_id, None)
        for action_id in ended:
            state = self._actions.pop(action_id, None)
            if state is None:
                continue
            out.append(
                PlaybackInterrupted(action_id, round(state.played_ms), " ".join(state.sentences).strip(), reason)
            )
        self._paused = False
        if not self._queue:
            self._run_start = None
            self._run_sent_ms = 0.0
        out += self.tick(now)
        return out

    # -- inside ------------------------------------------------------------------------------

    def _ms(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_ms

    def _padded(self, audio: bytes) -> bytes:
        size = max(-(-len(audio) // self.frame_bytes) * self.frame_bytes, self.min_bytes if audio else 0)
        return audio + bytes([self.silence_byte]) * (size - len(audio))

    def _send(self, now: float, out: list[Output]) -> None:
        while self._queue:
            seg = self._queue[0]
            if seg.sent == 0:
                self._note_gap(seg, now)
            assert self._run_start is not None
            left = len(seg.audio) - seg.sent
            n = min(self.chunk_bytes, left)
            if left - n and left - n < self.min_bytes:  # never leave a tail the carrier would refuse
                n = left
            budget = (now - self._run_start) * 1000.0 + self.lead_ms - self._run_sent_ms
            if n and budget < self._ms(n) - 1e-6:  # whole chunks only: never more than the lead ahead
                return
            if seg.sent == 0:
                seg.start_ms = self._run_sent_ms
                if seg.text:
                    self._recent.append(seg.text)
                    del self._recent[:-3]
                state = self._actions[seg.action_id]
                if not state.started:
                    state.started = True
                    if seg.bot_mark is None:
                        out.append(PlaybackStarted(seg.action_id))
            if seg.bot_mark is not None or not seg.audio:  # a bot mark, or the end of a stream
                self._queue.popleft()
                self._end_segment(seg, out)
                continue
            chunk = seg.audio[seg.sent : seg.sent + n]
            seg.sent += n
            self._run_sent_ms += self._ms(n)
            out.append(SendAudio(chunk))
            if seg.sent == len(seg.audio):
                self._queue.popleft()
                self._end_segment(seg, out)

    def _note_gap(self, seg: Segment, now: float) -> None:
        """Before a segment's first byte: start a run if idle; if the carrier ran dry before this
        segment came, the run goes on from now (and a gap inside an action is an underrun)."""
        started = seg.action_id in self._actions and self._actions[seg.action_id].started
        if self._after_clear:  # a resume after a pause: not a gap the carrier made
            self._after_clear = False
            started = False
        if self._run_start is None:
            self._run_start, self._run_sent_ms = now, 0.0
            if started:
                self.counters.underruns += 1
            return
        dry_ms = (now - self._run_start) * 1000.0 - self._run_sent_ms
        if dry_ms > 0:
            self._run_start = now - self._run_sent_ms / 1000.0
            if started and dry_ms > UNDERRUN_MS:
                self.counters.underruns += 1

    def _end_segment(self, seg: Segment, out: list[Output]) -> None:
        if self.marks:
            seg.mark = f"b{next(self._mark_ids)}"
            out.append(SendMark(seg.mark))
        self._unconfirmed.append(seg)

    def _confirm_by_clock(self, now: float, out: list[Output]) -> None:
        """Without marks, a segment has played when the clock says so; with marks, when its echo
        came, or (counted as a missing mark) ``mark_grace`` after the clock said so."""
        while self._unconfirmed and self._run_start is not None:
            seg = self._unconfirmed[0]
            end = seg.start_ms + self._ms(len(seg.audio))
            elapsed = (now - self._run_start) * 1000.0
            if elapsed < end + (self.mark_grace * 1000.0 if self.marks else 0.0):
                return
            if self.marks:
                self.counters.missing_marks += 1
                if seg.mark is not None:
                    self._forget_mark(seg.mark)  # a late echo, if it ever comes, changes nothing
            self._confirm(self._unconfirmed.popleft(), out)

    def _forget_mark(self, name: str) -> None:
        self._cleared_marks[name] = None
        while len(self._cleared_marks) > MAX_CLEARED_MARKS:
            del self._cleared_marks[next(iter(self._cleared_marks))]

    def _confirm(self, seg: Segment, out: list[Output]) -> None:
        if seg.bot_mark is not None:
            self._waiting_marks -= 1
        state = self._actions.get(seg.action_id)
        if state is None:
            return
        state.played_ms += self._ms(len(seg.audio))
        if seg.text:
            state.sentences.append(seg.text)
        state.segments_left -= 1
        if state.segments_left == 0 and state.last_seen:
            del self._actions[seg.action_id]
            out.append(
                BotMarkPlayed(seg.bot_mark)
                if seg.bot_mark is not None
                else PlaybackFinished(seg.action_id, round(state.played_ms))
            )
        if not self._queue and not self._unconfirmed and self._run_start is not None:
            self._run_start, self._run_sent_ms = None, 0.0

    def _rewind(self, heard: float, out: list[Output]) -> list[Output]:
        """Clear the carrier: segments heard whole are confirmed, the cut one keeps its unheard part
        at the head of the queue (heard part credited to its action), the rest goes back unsent."""
        out.append(SendClear())
        cleared = 0
        back: list[Segment] = []
        for seg in self._unconfirmed:
            end = seg.start_ms + self._ms(len(seg.audio))
            if seg.mark is not None:
                self._forget_mark(seg.mark)
            if end <= heard:
                self._confirm(seg, out)
            else:
                back.append(seg)
        if self._queue and self._queue[0].sent:
            back.append(self._queue.popleft())
        self._unconfirmed.clear()
        rest: list[Segment] = []
        for seg in back:
            heard_bytes = max(0, min(seg.sent, round((heard - seg.start_ms) * self.bytes_per_ms)))
            heard_bytes -= heard_bytes % self.frame_bytes
            cleared += seg.sent - heard_bytes
            state = self._actions.get(seg.action_id)
            heard_s = self._ms(heard_bytes) / 1000.0
            said, unsaid = _split_words(seg, heard_bytes / max(1, len(seg.audio)), heard_s)
            if state is not None and heard_bytes:
                state.played_ms += self._ms(heard_bytes)
                if said:
                    state.sentences.append(said)
            # not heard to its end (end > heard, or not all sent): the rest plays on after a resume, with
            # the words not yet heard (the heard ones are credited above, once)
            words = tuple(WordTime(w.word, w.start - heard_s, w.end - heard_s) for w in seg.words if w.end > heard_s)
            rest.append(
                Segment(
                    seg.action_id,
                    seg.audio[heard_bytes:],
                    text=unsaid,
                    words=words,
                    last=seg.last,
                    interrupt=seg.interrupt,
                    bot_mark=seg.bot_mark,  # a mark cleared before its turn is still a mark
                )
            )
        self.counters.cleared_bytes += cleared
        self._queue.extendleft(reversed(rest))
        self._run_start, self._run_sent_ms = None, 0.0
        self._after_clear = True
        return out


def _allows(interrupt: Interrupt, reason: InterruptReason) -> bool:
    if reason in ("stop", "replace", "hangup", "machine"):
        return True
    return interrupt == "any" or interrupt == reason


def _split_words(seg: Segment, share: float, heard_s: float) -> tuple[str, str]:
    """A cut sentence as (heard, not heard): words whose end was heard (TTS word times), else the
    same share of the words as of the audio."""
    if seg.words:
        heard = [w.word for w in seg.words if w.end <= heard_s]
        rest = [w.word for w in seg.words if w.end > heard_s]
        return " ".join(heard), " ".join(rest)
    words = seg.text.split()
    n = int(len(words) * share)
    return " ".join(words[:n]), " ".join(words[n:])
