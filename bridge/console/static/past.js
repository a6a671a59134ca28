// Past calls: GET /v1/calls?since= (newest first; "Show more" asks for more of the window, up to the
// API's 1000), searched by number and by what was said on the bridge (&q=, typed in the filter box: asked
// 300 ms after the last key); an open call's transcript beside its recording.

import { blobOf, getJson } from "./api.js";
import { duration, el, numbers, speakerClass, syncList, utteranceParts, when } from "./render.js";

const PAGE = 50;
const MAX_LIMIT = 1000;
const MAX_Q = 100; // the API's bound
const DEBOUNCE_MS = 300;

// What to ask for: the box's text, a phone number without its spaces, dashes, dots and brackets.
export function searchOf(text) {
  const q = String(text || "").trim().slice(0, MAX_Q);
  return /^\+?[0-9][0-9 ().-]*$/.test(q) ? q.replace(/[ ().-]/g, "") : q;
}

export class PastList {
  constructor({ list, empty, more, filter, range }, onOpen, onError) {
    Object.assign(this, { list, empty, more, filter, range, onOpen, onError });
    this.limit = PAGE;
    this.calls = [];
    this.selected = null;
    this.typing = null;
    filter.addEventListener("input", () => {
      clearTimeout(this.typing);
      this.typing = setTimeout(() => {
        this.limit = PAGE;
        this.load().catch((error) => this.onError(error));
      }, DEBOUNCE_MS);
    });
    range.addEventListener("change", () => {
      this.limit = PAGE;
      this.load().catch((error) => this.onError(error));
    });
    more.addEventListener("click", () => {
      this.limit = Math.min(MAX_LIMIT, this.limit * 2);
      this.load().catch((error) => this.onError(error));
    });
  }

  async load() {
    const since = new Date(Date.now() - Number(this.range.value) * 1000).toISOString();
    const q = searchOf(this.filter.value);
    const search = q ? `&q=${encodeURIComponent(q)}` : "";
    const answer = await getJson(`/v1/calls?since=${encodeURIComponent(since)}&limit=${this.limit}${search}`);
    if (q !== searchOf(this.filter.value)) return; // the box changed meanwhile: its own load follows
    this.calls = answer.calls.filter((call) => !call.active);
    this.more.hidden = answer.calls.length < this.limit || this.limit >= MAX_LIMIT;
    this.render();
  }

  render() {
    syncList(this.list, this.calls, () => this.make(), (li, call) => this.fill(li, call));
    this.empty.hidden = this.calls.length > 0;
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
    first.append(el("span", "numbers", numbers(call)));
    if (call.recording) first.append(el("span", "badge rec", "● recorded"));
    const seconds = call.ended_at ? (new Date(call.ended_at) - new Date(call.started_at)) / 1000 : 0;
    const second = el("span", "call-line sub");
    second.append(
      el("span", "when", when(call.started_at)),
      el("span", "duration", duration(seconds)),
      el("span", "carrier", call.provider),
      el("span", "reason", call.end_reason || ""),
      el("span", "utterances", `${call.utterances} utterance${call.utterances === 1 ? "" : "s"}`),
    );
    button.replaceChildren(first, second);
  }

  select(id) {
    this.selected = id;
    for (const li of this.list.children) li.firstChild.setAttribute("aria-pressed", String(li.dataset.callId === id));
  }
}

// A past call's transcript (utterances that seek the player when clicked; the one playing highlighted),
// its recording (fetched with the token into a Blob: an <audio> element cannot send a header), downloads.
export class Transcript {
  constructor({ list, player, playerBox, downloads }) {
    Object.assign(this, { list, player, playerBox, downloads });
    this.lines = [];
    this.url = null;
    this.call = null;
    player.addEventListener("timeupdate", () => this.highlight());
    player.addEventListener("seeked", () => this.highlight());
    for (const button of downloads.querySelectorAll("button[data-download]")) {
      button.addEventListener("click", () => this.download(button.dataset.download, button));
    }
  }

  async open(call, stillWanted) {
    this.close();
    this.call = call;
    const transcript = await getJson(`/v1/calls/${call.id}/transcript`);
    if (!stillWanted()) return null;
    this.lines = transcript.utterances.map((utterance) => this.line(utterance));
    this.list.replaceChildren(...this.lines.map((line) => line.li));
    if (!this.lines.length) this.list.append(el("li", "note", "No utterance on record."));
    this.downloads.hidden = false;
    this.downloads.querySelector('[data-download="recording"]').hidden = !call.recording;
    if (call.recording) {
      const blob = await blobOf(`/v1/calls/${call.id}/recording`);
      if (!stillWanted()) return null;
      this.url = URL.createObjectURL(blob);
      this.player.src = this.url;
      this.playerBox.hidden = false;
    }
    return transcript;
  }

  line(utterance) {
    const li = el("li", "utt");
    const button = el("button", "seek");
    button.type = "button";
    const speaker = utteranceParts(button, utterance);
    li.classList.add(speakerClass(speaker));
    li.dataset.speaker = speaker;
    li.dataset.start = String(utterance.start);
    li.dataset.end = String(utterance.end);
    button.title = "Play from here";
    button.addEventListener("click", () => {
      if (this.url) this.player.currentTime = Number(utterance.start);
    });
    li.append(button);
    return { li, start: Number(utterance.start), end: Number(utterance.end) };
  }

  highlight() {
    const t = this.player.currentTime;
    for (const line of this.lines) {
      const on = line.start <= t && t < line.end;
      line.li.classList.toggle("playing", on);
      if (on) line.li.setAttribute("aria-current", "true");
      else line.li.removeAttribute("aria-current");
    }
  }

  async download(kind, button) {
    if (!this.call) return;
    const id = this.call.id;
    const recording = this.call.recording;
    const path = kind === "recording" ? `/v1/calls/${id}/recording` : `/v1/calls/${id}/transcript?format=${kind}`;
    const ext = kind === "recording" ? (recording && recording.format) || "wav" : kind;
    button.disabled = true;
    try {
      const url = URL.createObjectURL(await blobOf(path));
      const a = el("a");
      a.href = url;
      a.download = `call-${id}.${ext}`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } finally {
      button.disabled = false;
    }
  }

  close() {
    this.player.pause();
    this.player.removeAttribute("src");
    this.player.load();
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    this.call = null;
    this.lines = [];
    this.playerBox.hidden = true;
    this.downloads.hidden = true;
  }
}
