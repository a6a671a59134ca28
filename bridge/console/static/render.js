// Small DOM and formatting helpers. Text always goes in as textContent: nothing a caller says, a carrier
// sends or a bot names is ever parsed as HTML.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function clock(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

export function duration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function numbers(call) {
  return `${call.from || "unknown"} → ${call.to || "unknown"}`;
}

export function speakerOf(thing) {
  if (thing.speaker) return String(thing.speaker);
  if (thing.channel === 1) return "agent";
  return "caller";
}

// A speaker's class name: only the known ones (anything else is styled as a caller).
export function speakerClass(speaker) {
  return ["caller", "agent", "bot"].includes(speaker) ? speaker : "caller";
}

// One utterance's line: [time] speaker: text (the time and speaker in their own spans).
export function utteranceParts(node, utterance) {
  const speaker = speakerOf(utterance);
  node.append(el("span", "time", clock(utterance.start)), el("span", "speaker", speaker), el("span", "text", utterance.text));
  return speaker;
}

// Show ``items`` in ``list`` as its <li>s, keyed by ``item.id``: an item already shown keeps its element
// (refilled by ``fill``), so a focused button keeps the focus and a click in flight finds its target;
// ``make`` creates the element of a new one; the elements of items no longer there are removed.
export function syncList(list, items, make, fill) {
  const old = new Map([...list.children].map((li) => [li.dataset.callId, li]));
  items.forEach((item, i) => {
    let li = old.get(item.id);
    if (li) old.delete(item.id);
    else {
      li = make(item);
      li.dataset.callId = item.id;
    }
    fill(li, item);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  for (const li of old.values()) li.remove();
}
