// The console: log in with the API token, then the live calls (GET /v1/events keeps the list, read from
// GET /v1/calls at the start and after each reconnection, and again every 10 s for what no event says),
// the past calls (read again when calls end, and every 60 s), and one open call at a time: live (its events
// as they come) or past (its transcript and recording). A hidden tab keeps its stream (an idle reader costs
// the bridge next to nothing) but reads no list until it is shown again.

import { ApiError, follow, followAll, getJson, sleep, token } from "./api.js";
import { Conversation, LIVE_TYPES, LiveList } from "./live.js";
import { PastList, Transcript } from "./past.js";
import { el, numbers, when } from "./render.js";

const LIVE_REFRESH_MS = 10_000; // GET /v1/calls again: a state no event of the list's types says (paused)
const TICK_MS = 1000; // the durations, counted in the page
const PAST_REFRESH_MS = 60_000; // the past calls again (a call's end on GET /v1/events reads them at once)
const $ = (id) => document.getElementById(id);

const page = {
  error: $("error"),
  status: $("status"),
  login: $("login"),
  console: $("console"),
  logout: $("logout"),
  detail: $("detail"),
  title: $("detail-title"),
  meta: $("detail-meta"),
  state: $("detail-state"),
  conversation: $("conversation"),
};

let session = 0; // bumped at each log-in and log-out: loops of an earlier session stop
let opened = null; // {id, kind: "live" | "past"}
let stopFollowing = null;
let stopLive = null; // the GET /v1/events reader
let lastRead = 0; // Date.now() of the last GET /v1/calls

function showError(message) {
  page.error.textContent = message;
  page.error.hidden = !message;
}

function refused(error) {
  return error instanceof ApiError && (error.status === 401 || error.status === 403);
}

const live = new LiveList($("live-list"), $("live-empty"), $("live-count"), (call) => openLive(call));
const past = new PastList(
  { list: $("past-list"), empty: $("past-empty"), more: $("past-more"), filter: $("past-filter"), range: $("past-window") },
  (call) => openPast(call),
  (error) => pastFailed(error, session),
);
const transcript = new Transcript({ list: page.conversation, player: $("player"), playerBox: $("player-box"), downloads: $("downloads") });

function closeDetail() {
  if (stopFollowing) stopFollowing();
  stopFollowing = null;
  transcript.close();
  opened = null;
  live.select(null);
  past.select(null);
  page.conversation.replaceChildren();
  page.detail.hidden = true;
}

function openDetail(call, kind) {
  closeDetail();
  opened = { id: call.id, kind };
  page.detail.hidden = false;
  page.detail.dataset.kind = kind;
  page.detail.dataset.callId = call.id;
  page.title.textContent = numbers(call);
  page.state.textContent = "";
  page.title.focus();
}

function openLive(call) {
  openDetail(call, "live");
  live.select(call.id);
  page.meta.textContent = `${call.provider} · ${call.direction || "inbound"} · live`;
  const conversation = new Conversation(page.conversation);
  const mine = opened;
  stopFollowing = follow(
    call.id,
    (type, body) => conversation.handle(type, body),
    (state, error) => {
      if (opened !== mine) return;
      if (state === "ended") page.state.textContent = "The call has ended: find it under Past calls.";
      else if (state === "gone") page.state.textContent = `No more events: ${error ? error.message : "gone"}.`;
      else if (state === "retrying") page.state.textContent = "Reconnecting…";
      else page.state.textContent = "";
    },
  );
}

async function openPast(call) {
  openDetail(call, "past");
  past.select(call.id);
  const reason = call.end_reason ? ` · ${call.end_reason}` : "";
  page.meta.textContent = `${call.provider} · ${when(call.started_at)}${reason}`;
  const mine = opened;
  page.state.textContent = "Loading…";
  try {
    await transcript.open(call, () => opened === mine);
    if (opened === mine) page.state.textContent = call.recording ? "" : "No recording of this call.";
  } catch (error) {
    if (opened !== mine) return;
    page.state.textContent = "";
    page.conversation.replaceChildren(el("li", "note", `Could not open the call: ${error.message}`));
  }
}

// An ended call joins the past list once its end is on record (and its recording written): now (at most one
// read a second, however many calls end together), and 1.5 s and 5 s after the last end.
let pastTimers = [];
let pastAt = 0;
function pastSoon(mine) {
  for (const timer of pastTimers) clearTimeout(timer);
  const first = Math.max(0, pastAt + 1000 - Date.now());
  pastTimers = [first, 1500, 5000].map((ms) =>
    setTimeout(() => {
      pastAt = Date.now();
      if (session === mine && !document.hidden) refreshPast(mine);
    }, ms),
  );
}

function showLive(calls, mine) {
  const gone = live.update(calls);
  live.select(opened && opened.kind === "live" ? opened.id : null);
  if (gone.length) pastSoon(mine);
}

let held = null; // the events of GET /v1/events that came while GET /v1/calls was being read

function applyLive(type, body, mine) {
  if (live.event(type, body) !== null) pastSoon(mine);
  else if (type === "call.started") live.select(opened && opened.kind === "live" ? opened.id : null);
}

// GET /v1/calls, then the events that came while it was read applied on top of what it says (each sets a
// state: applied late, it still holds).
async function readLive(mine) {
  const mineHeld = (held = held || []);
  try {
    const { calls } = await getJson("/v1/calls");
    if (session !== mine) return;
    lastRead = Date.now();
    showLive(calls, mine);
    page.status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (session !== mine) return;
    if (refused(error)) return logOut(`The bridge refused the token: ${error.message}`);
    page.status.textContent = `live list: ${error.message}`;
  } finally {
    if (held === mineHeld) held = null;
    if (session === mine) for (const [type, body] of mineHeld) applyLive(type, body, mine);
  }
}

// The live list from GET /v1/events; each (re)connection reads GET /v1/calls (the stream has only what
// comes after its start, and a resume may find some events no longer kept).
function followLive(mine) {
  stopLive = followAll(
    LIVE_TYPES,
    () => readLive(mine),
    (type, body) => {
      if (session !== mine) return;
      if (held) held.push([type, body]);
      else applyLive(type, body, mine);
    },
    (state, error) => {
      if (session !== mine) return;
      if (state === "gone" && refused(error)) logOut(`The bridge refused the token: ${error.message}`);
      else if (state === "gone") page.status.textContent = `live list: ${error.message}`;
      else if (state === "retrying") page.status.textContent = `live list: reconnecting (${error.message})`;
    },
  );
}

async function liveLoop(mine) {
  while (session === mine) {
    await sleep(TICK_MS);
    if (session !== mine) return;
    live.tick();
    if (Date.now() - lastRead >= LIVE_REFRESH_MS && !document.hidden) {
      lastRead = Date.now(); // a failed read waits its turn too
      await readLive(mine);
    }
  }
}

function pastFailed(error, mine) {
  if (session !== mine) return;
  if (refused(error)) return logOut(`The bridge refused the token: ${error.message}`);
  page.status.textContent = `past calls: ${error.message}`;
}

async function refreshPast(mine) {
  try {
    await past.load();
  } catch (error) {
    pastFailed(error, mine);
  }
}

async function pastLoop(mine) {
  while (session === mine) {
    await sleep(PAST_REFRESH_MS);
    if (session === mine && !document.hidden) await refreshPast(mine);
  }
}

async function logIn() {
  const mine = ++session;
  showError("");
  page.status.textContent = "Checking the token…";
  try {
    const { calls } = await getJson("/v1/calls");
    if (session !== mine) return;
    live.update(calls);
    lastRead = Date.now();
  } catch (error) {
    if (session !== mine) return;
    return logOut(refused(error) ? `The bridge refused the token: ${error.message}` : `The bridge did not answer: ${error.message}`);
  }
  page.login.hidden = true;
  page.console.hidden = false;
  page.logout.hidden = false;
  page.status.textContent = "";
  followLive(mine);
  liveLoop(mine);
  refreshPast(mine);
  pastLoop(mine);
}

function logOut(message) {
  session++;
  if (stopLive) stopLive();
  stopLive = null;
  token.clear();
  closeDetail();
  live.update([]);
  past.calls = [];
  past.render();
  page.console.hidden = true;
  page.logout.hidden = true;
  page.login.hidden = false;
  page.status.textContent = "";
  showError(message || "");
  $("token").value = "";
  $("token").focus();
}

page.login.addEventListener("submit", (event) => {
  event.preventDefault();
  token.set($("token").value.trim());
  logIn();
});
page.logout.addEventListener("click", () => logOut(""));
$("detail-close").addEventListener("click", closeDetail);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !page.detail.hidden) closeDetail();
});
document.addEventListener("visibilitychange", () => {
  // shown again: what the hidden tab did not read
  if (document.hidden || page.console.hidden) return;
  readLive(session);
  refreshPast(session);
});
window.addEventListener("unhandledrejection", (event) => showError(String(event.reason && event.reason.message)));

if (token.get()) logIn();
else $("token").focus();
