// Live calls: the list (from GET /v1/calls when the page opens and after each reconnection of its event
// stream, kept up to date by GET /v1/events: call.started, call.ended, playback.*) and an open call's
// conversation as its events come (GET /v1/calls/{id}/events).

import { clock, duration, el, numbers, speakerClass, speakerOf, syncList, utteranceParts } from "./render.js";

// What the list needs of every call's events (?types= of GET /v1/events: the bridge sends nothing else).
export const LIVE_TYPES = ["call.started", "call.ended", "playback.started", "playback.finished", "playback.interrupted"];

const ENDED_KEPT_MS = 30_000;

export class LiveList {
  constructor(list, empty, count, onOpen) {
    Object.assign(this, { list, empty, count, onOpen });
    this.calls = new Map(); // id -> the call as GET /v1/calls says, with `since` (Date.now() at its start)
    this.ended = new Map(); // id -> Date.now() of its call.ended: a list read just before it does not bring it back
    this.selected = null;
  }

  // Show these calls (GET /v1/calls's: what is live now); returns the ids that were live and are not any more.
  update(calls) {
    const now = Date.now();
    for (const [id, at] of this.ended) if (now - at > ENDED_KEPT_MS) this.ended.delete(id);
    const fresh = new Map(
      calls.filter((call) => !this.ended.has(call.id)).map((call) => [call.id, { ...call, since: now - 1000 * (Number(call.duration_s) || 0) }]),
    );
    const gone = [...this.calls.keys()].filter((id) => !fresh.has(id));
    this.calls = fresh;
    this.render();
    return gone;
  }

  // One event of GET /v1/events; returns the id of a call it ended (else null).
  event(type, body) {
    const call = body.call || {};
    const known = this.calls.get(call.id);
    if (type === "call.started") {
      if (known) return null;
      const { id, provider, from, to, direction } = call;
      this.calls.set(id, { id, provider, from, to, direction, state: "listening", since: Date.now() });
    } else if (type === "call.ended") {
      this.ended.set(call.id, Date.now());
      if (!known) return null;
      this.calls.delete(call.id);
      this.render();
      return call.id;
    } else if (!known) return null;
    else if (type === "playback.started") known.state = "speaking";
    else if (type === "playback.finished" || type === "playback.interrupted") known.state = "listening";
    else return null;
    this.render();
    return null;
  }

  render() {
    const calls = [...this.calls.values()];
    syncList(this.list, calls, (call) => this.make(call), (li, call) => this.fill(li, call));
    this.empty.hidden = calls.length > 0;
    this.count.textContent = calls.length ? `(${calls.length})` : "";
  }

  // The durations only, counted here from each call's start (no request): every second.
  tick() {
    const now = Date.now();
    for (const li of this.list.children) {
      const span = li.querySelector(".duration");
      if (span && li.call) span.textContent = duration((now - li.call.since) / 1000);
    }
  }

  make() {
    const li = el("li");
    const button = el("button", "call");
    button.type = "button";
    button.addEventListener("click", () => this.onOpen(li.call));
    li.append(button);
    return li;
  }

  fill(li, call) {
    li.call = call;
    const button = li.firstChild;
    button.setAttribute("aria-pressed", String(call.id === this.selected));
    const first = el("span", "call-line");
    const state = call.state || "listening";
    first.append(el("span", "numbers", numbers(call)), el("span", `badge state-${state}`, state));
    const second = el("span", "call-line sub");
    second.append(
      el("span", "carrier", call.provider),
      el("span", "direction", call.direction || "inbound"),
      el("span", "duration", duration((Date.now() - call.since) / 1000)),
    );
    if (call.instance) second.append(el("span", "instance", call.instance));  // fleet mode: who holds it
    button.replaceChildren(first, second);
  }

  select(id) {
    this.selected = id;
    for (const li of this.list.children) li.firstChild.setAttribute("aria-pressed", String(li.dataset.callId === id));
  }
}

const NOTES = {
  "call.started": (b) => `call started (${(b.speakers || []).join(", ") || "caller"})`,
  "call.dtmf": (b) => `key pressed: ${b.digit}`,
  "dtmf.gathered": (b) => `keys gathered: ${b.digits || "none"} (${b.reason})`,
  "transfer.started": (b) => `transfer to ${b.to} (${b.method})`,
  "transfer.completed": (b) => `transfer answered by ${b.to}`,
  "transfer.failed": (b) => `transfer failed: ${b.status}`,
  "call.stream_restarted": (b) => `stream restarted (${b.streams})`,
  "stt.session_replaced": (b) => `speech-to-text session replaced (${b.reason})`,
  "stt.failed": () => "speech-to-text failed: the call goes on untranscribed",
  "action.failed": (b) => `bot action ${b.action_id} failed: ${b.error}`,
  "call.ended": (b) => `call ended (${(b.summary && b.summary.end_reason) || b.end_reason || "ended"})`,
};

// An open live call's conversation: finals in time order with their speaker, partials greyed while they
// change, the bot's replies (what was heard when one was interrupted), keys, transfers, the end.
export class Conversation {
  constructor(list) {
    this.list = list;
    this.partials = new Map(); // speaker -> its greyed line
    this.replies = new Map(); // action id -> its line
  }

  handle(type, body) {
    if (type === "utterance.final") this.final(body.utterance || {});
    else if (type === "utterance.partial") this.partial(body);
    else if (type.startsWith("playback.")) this.reply(type, body);
    else if (NOTES[type]) this.list.append(el("li", "note", NOTES[type](body)));
  }

  final(utterance) {
    const li = el("li", "utt");
    const speaker = utteranceParts(li, utterance);
    li.classList.add(speakerClass(speaker));
    li.dataset.speaker = speaker;
    li.dataset.start = String(utterance.start);
    this.partials.get(speaker)?.remove();
    this.partials.delete(speaker);
    // in order of time: before the first later final (two parties' finals may arrive out of order)
    const later = [...this.list.querySelectorAll("li.utt:not(.partial)")].find((n) => Number(n.dataset.start) > utterance.start);
    this.list.insertBefore(li, later || null);
  }

  partial(body) {
    const speaker = speakerOf(body);
    let li = this.partials.get(speaker);
    if (!li) {
      li = el("li", `utt partial ${speakerClass(speaker)}`);
      this.partials.set(speaker, li);
    }
    li.replaceChildren(el("span", "speaker", speaker), el("span", "text", body.text));
    this.list.append(li);
  }

  reply(type, body) {
    const id = body.action_id;
    let li = this.replies.get(id);
    if (!li) {
      li = el("li", "reply");
      li.dataset.actionId = id;
      this.replies.set(id, li);
      this.list.append(li);
    }
    const head = [el("span", "speaker", "bot"), el("span", "text", `reply ${id}`)];
    if (type === "playback.started") li.replaceChildren(...head, el("span", "sub", " playing…"));
    else if (type === "playback.finished") li.replaceChildren(...head, el("span", "sub", ` played ${clock(body.played_ms / 1000)}`));
    else if (type === "playback.interrupted") {
      li.classList.add("interrupted");
      const heard = el("span", "heard");
      heard.append(el("span", "sub", `interrupted (${body.reason}) after ${clock(body.played_ms / 1000)}; the caller heard: `));
      heard.append(el("q", "heard-text", body.heard_text || ""));
      li.replaceChildren(...head, heard);
    } else if (type === "playback.mark") li.append(el("span", "sub", ` mark ${body.name}`));
  }
}
