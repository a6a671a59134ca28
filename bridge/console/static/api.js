// The bridge's /v1/ API as the console uses it: the token from the tab's sessionStorage on every request
// (Authorization: Bearer), errors as ApiError, and the server-sent event streams (a call's, every call's)
// read with fetch() (an EventSource cannot send the header), parsed here and resumed with Last-Event-ID.

const KEY = "bridge-console-token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(path, { signal, headers = {} } = {}) {
  const resp = await fetch(path, {
    headers: { ...headers, Authorization: `Bearer ${token.get() || ""}` },
    signal,
    cache: "no-store",
  });
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      if (body && typeof body.error === "string") message = body.error;
    } catch {
      // not JSON: the status says it
    }
    throw new ApiError(resp.status, message);
  }
  return resp;
}

export const getJson = async (path, options) => (await api(path, options)).json();
export const blobOf = async (path) => (await api(path)).blob();
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A server-sent events parser (WHATWG HTML, "event stream interpretation"): feed it text as it comes;
// it calls onEvent({id, type, data}) for each event; comments (": keepalive") are skipped.
export function sseParser(onEvent) {
  let buffer = "";
  let data = [];
  let type = "";
  let id = null;
  const lineEnd = /\r\n|\r|\n/;
  return (text) => {
    buffer += text;
    for (;;) {
      const m = lineEnd.exec(buffer);
      if (m === null || (m[0] === "\r" && m.index === buffer.length - 1)) return; // a CR may start a CRLF
      const line = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      if (line === "") {
        if (data.length) onEvent({ id, type: type || "message", data: data.join("\n") });
        data = [];
        type = "";
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) id = value;
    }
  };
}

// Read a server-sent events answer to its end: onEvent({id, type, data}) for each event.
async function readEvents(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  const feed = sseParser(onEvent);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    feed(value);
  }
}

function bodyOf(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return null;
  }
}

// Follow GET /v1/calls/{id}/events: onEvent(type, body, sequence) for each event, in order, never twice;
// onState("following" | "ended" | "gone" | "retrying", error?). A dropped stream is resumed with
// Last-Event-ID; 204 (everything was sent and the call has ended) stops. Returns a function that stops.
export function follow(callId, onEvent, onState) {
  const controller = new AbortController();
  let last = 0;
  let stopped = false;
  (async () => {
    while (!stopped) {
      try {
        const headers = last ? { "Last-Event-ID": String(last) } : {};
        const resp = await api(`/v1/calls/${callId}/events`, { signal: controller.signal, headers });
        if (resp.status === 204) {
          onState("ended");
          return;
        }
        onState("following");
        await readEvents(resp, (event) => {
          const sequence = Number(event.id);
          if (!(sequence > last)) return;
          last = sequence;
          const body = bodyOf(event);
          if (body !== null) onEvent(event.type, body, sequence);
        });
      } catch (error) {
        if (stopped || error.name === "AbortError") return;
        if ([401, 403, 404].includes(error.status)) {
          onState("gone", error);
          return;
        }
        onState("retrying", error);
      }
      await sleep(500);
    }
  })();
  return () => {
    stopped = true;
    controller.abort();
  };
}

// Follow GET /v1/events (every call's events; ?types= those only): onOpen() each time a stream opens, the
// first time and after every reconnection (the caller reads again what the gap may have hidden: events
// come only from the stream's start on, and a resume may find some no longer kept), then
// onEvent(type, body) for each event in the bridge's order; onState("following" | "retrying" | "gone",
// error?). A dropped or ended stream is resumed with Last-Event-ID, the id as the bridge gave it (dotted
// under --workers); the first stream's X-Events-From is the position before its first event. 401, 403
// and 400 stop (onState "gone"); 429 and the rest are retried. Returns a function that stops.
export function followAll(types, onOpen, onEvent, onState) {
  const controller = new AbortController();
  const path = `/v1/events?types=${encodeURIComponent(types.join(","))}`;
  let last = null;
  let stopped = false;
  (async () => {
    let wait = 500;
    while (!stopped) {
      try {
        const headers = last ? { "Last-Event-ID": last } : {};
        const resp = await api(path, { signal: controller.signal, headers });
        const from = resp.headers.get("X-Events-From");
        if (!last && from && /^[0-9.]+$/.test(from)) last = from;
        onState("following");
        wait = 500;
        onOpen();
        await readEvents(resp, (event) => {
          if (event.id) last = event.id;
          const body = bodyOf(event);
          if (body !== null) onEvent(event.type, body);
        });
      } catch (error) {
        if (stopped || error.name === "AbortError") return;
        if ([400, 401, 403].includes(error.status)) {
          onState("gone", error);
          return;
        }
        onState("retrying", error);
        wait = Math.min(10_000, wait * 2);
      }
      await sleep(wait);
    }
  })();
  return () => {
    stopped = true;
    controller.abort();
  };
}
