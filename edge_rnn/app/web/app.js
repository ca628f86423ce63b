// Live autocomplete page: sends the text up to the cursor over a websocket, shows the
// suggestions for the word at the cursor, and charts bits per character as the
// session's own copy of the model adapts. One message in flight at a time: keystrokes
// that arrive meanwhile are coalesced into the next message, so a slow reply never
// queues up stale work. Like a phone keyboard: the chosen suggestion shows as grey text at the
// cursor, Tab accepts it with a space, and punctuation typed right after that automatic space
// takes its place ("morning." not "morning .") while a typed space there is absorbed.
"use strict";

const $ = (id) => document.getElementById(id);
const box = $("text");
let ws = null;
let seq = 0;
let outstanding = 0;
let lastSent = null;
let maxText = 20000;
let options = [];
let selected = 0; // the suggestion Tab accepts, shown as ghost text; Up/Down move it
let hidden = false; // Esc hid the suggestions until the next edit, so the arrows move the cursor again
let autoSpaceAt = null; // the cursor position right after a space that accepting added
const CLOSING = ".,;:!?)]}"; // punctuation that takes an automatic space's place
let points = [];
let lastMs = null;
let bundleName = "model-learned.zip"; // the name the server gives the next model bundle

function connect() {
  // The session token of an earlier visit brings back what this browser's model learned.
  const token = localStorage.getItem("edge-rnn-token");
  ws = new WebSocket(`ws://${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : ""));
  ws.onopen = () => flush();
  // A binary frame is the model bundle that follows a "model" reply (the download button).
  ws.onmessage = (event) => (typeof event.data === "string" ? onMessage(JSON.parse(event.data)) : saveBundle(event.data));
  ws.onclose = () => {
    document.body.classList.add("offline");
    $("status").textContent = "disconnected - reload the page for a new session";
  };
}

function context() {
  // The suggestions complete the word at the cursor, so the server sees the text before it.
  return box.value.slice(0, box.selectionEnd ?? box.value.length);
}

function send(message) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  seq += 1;
  outstanding += 1;
  ws.send(JSON.stringify({ ...message, seq }));
  return true;
}

function flush() {
  if (outstanding > 0) return;
  const text = context();
  if (text === lastSent) return;
  // Long texts: send an aligned tail, so the window (and the server's state) moves rarely.
  const half = Math.floor(maxText / 2);
  const offset = text.length > maxText ? (Math.floor((text.length - maxText) / half) + 1) * half : 0;
  if (send({ op: "text", text: text.slice(offset), offset })) lastSent = text;
}

function onMessage(m) {
  if (m.type === "hello") {
    maxText = m.max_text;
    if (m.token) localStorage.setItem("edge-rnn-token", m.token);
    $("model").textContent = `model ${m.model} - this tab has its own copy of it`;
    lastSent = null;
    flush();
    return;
  }
  if (m.seq !== null && m.seq !== undefined) outstanding = Math.max(0, outstanding - 1);
  if (m.type === "model") bundleName = m.name;
  if (m.type === "error") {
    $("download").disabled = false;
    $("error").hidden = false;
    $("error").textContent = m.error;
  } else if (m.type === "suggestions" || m.type === "learned") {
    if (m.type === "suggestions") {
      $("error").hidden = true;
      if (lastSent === context()) showSuggestions(m);
      drawGhost();
      lastMs = m.ms;
    }
    showStatus(m);
    if (m.curve_reset) points = [];
    points.push(...m.curve);
    drawChart();
  }
  flush();
}

function saveBundle(blob) {
  // This tab's adapted model as one file, saved the way a link with `download` saves it.
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = bundleName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  $("download").disabled = false;
}

function showSuggestions(m) {
  options = m.suggestions;
  selected = 0; // not `hidden`: a reply arriving after Esc must not bring back what Esc hid
  const chips = $("suggestions");
  chips.replaceChildren();
  options.forEach(([completion, prob], i) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "suggestion" + (i === selected ? " selected" : "");
    chip.dataset.completion = completion;
    const bold = document.createElement("b");
    bold.textContent = completion;
    const pct = document.createElement("span");
    pct.className = "p";
    pct.textContent = `${(100 * prob).toFixed(prob < 0.01 ? 1 : 0)}%`;
    chip.append(m.word, bold, pct);
    chip.addEventListener("mousedown", (event) => event.preventDefault()); // keep the cursor in the box
    chip.addEventListener("click", () => accept(i));
    chips.append(chip);
  });
}

function showStatus(m) {
  const bpc = m.bpc === null ? "-" : m.bpc.toFixed(2);
  const ms = lastMs === null ? "-" : lastMs.toFixed(1);
  $("status").textContent =
    `suggestions in ${ms} ms | learned from ${m.tokens} characters | ${bpc} bpc | ` +
    (m.learning ? "learning" : "not learning");
  $("learning").checked = m.learning;
}

function choose(i) {
  selected = (i + options.length) % options.length;
  document.querySelectorAll(".suggestion").forEach((chip, k) => chip.classList.toggle("selected", k === selected));
  drawGhost();
}

function accept(i) {
  if (!options[i]) return;
  box.focus();
  box.setRangeText(options[i][0] + " ", box.selectionStart, box.selectionEnd, "end");
  autoSpaceAt = box.selectionEnd;
  flush();
  drawGhost();
}

function afterAutoSpace(event) {
  // A key typed right after an automatic space: closing punctuation replaces the space, a space is absorbed.
  const at = autoSpaceAt;
  autoSpaceAt = null;
  if (at === null || box.selectionStart !== at || box.selectionEnd !== at || box.value[at - 1] !== " ") return false;
  if (event.key === " ") return true;
  if (!CLOSING.includes(event.key)) return false;
  box.setRangeText(event.key, at - 1, at, "end");
  flush();
  return true;
}

function current() {
  // Suggestions that belong to the text at the cursor and are not hidden.
  return options.length > 0 && !hidden && lastSent === context() && box.selectionStart === box.selectionEnd;
}

function drawGhost() {
  // The text up to the cursor, invisible, then the chosen completion: it lands where it would be typed.
  const ghost = $("ghost");
  const atEnd = box.selectionEnd === box.value.length;
  ghost.replaceChildren();
  if (current() && atEnd && box.value && options[selected]) { // an empty box shows its placeholder instead
    const completion = document.createElement("span");
    completion.className = "completion";
    completion.textContent = options[selected][0];
    ghost.append(box.value, completion);
  }
  ghost.scrollTop = box.scrollTop;
}

function axisLabels(W, H, left, top, bottom) {
  const middle = top + (H - top - bottom) / 2;
  return [
    `<text class="axis label" x="${(W + left) / 2}" y="${H - 6}" text-anchor="middle">characters learned</text>`,
    `<text class="axis label" x="18" y="${middle}" text-anchor="middle" transform="rotate(-90 18 ${middle})">bits/char</text>`,
  ];
}

function drawChart() {
  const svg = $("chart");
  const W = 640, H = 170, left = 40, right = 10, top = 10, bottom = 28;
  const shown = points.slice(-400);
  const parts = [];
  if (shown.length === 0) {
    parts.push(`<text class="axis" x="${W / 2}" y="${H / 2}" text-anchor="middle">type a few words: each one is scored, then learned from</text>`);
    parts.push(...axisLabels(W, H, left, top, bottom));
    svg.innerHTML = parts.join("");
    return;
  }
  const x0 = shown[0][0], x1 = Math.max(shown[shown.length - 1][0], x0 + 1);
  const ymax = Math.max(1, Math.ceil(Math.max(...shown.map((p) => p[1]))));
  const sx = (t) => left + ((t - x0) / (x1 - x0)) * (W - left - right);
  const sy = (b) => top + (1 - Math.min(b, ymax) / ymax) * (H - top - bottom);
  const step = ymax > 8 ? 2 : 1;
  for (let y = 0; y <= ymax; y += step) {
    parts.push(`<line class="grid" x1="${left}" x2="${W - right}" y1="${sy(y)}" y2="${sy(y)}"/>`);
    parts.push(`<text class="axis" x="${left - 6}" y="${sy(y) + 4}" text-anchor="end">${y}</text>`);
  }
  parts.push(`<text class="axis" x="${W - right}" y="${H - 6}" text-anchor="end">${x1}</text>`);
  parts.push(`<text class="axis" x="${left}" y="${H - 6}">${x0}</text>`);
  parts.push(...axisLabels(W, H, left, top, bottom));
  let ema = shown[0][1];
  const trend = shown.map(([t, b]) => {
    ema = 0.8 * ema + 0.2 * b;
    return `${sx(t).toFixed(1)},${sy(ema).toFixed(1)}`;
  });
  for (const [t, b] of shown) parts.push(`<circle class="dot" cx="${sx(t).toFixed(1)}" cy="${sy(b).toFixed(1)}" r="2.2"/>`);
  parts.push(`<polyline class="trend" points="${trend.join(" ")}"/>`);
  svg.innerHTML = parts.join("");
}

box.addEventListener("input", () => {
  hidden = false;
  flush();
  drawGhost();
});
box.addEventListener("keyup", () => {
  flush(); // cursor moves change the word at the cursor
  drawGhost();
});
box.addEventListener("click", () => {
  autoSpaceAt = null;
  flush();
  drawGhost();
});
box.addEventListener("scroll", drawGhost);
box.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || ["Shift", "CapsLock"].includes(event.key)) return;
  if (event.key.length === 1 && afterAutoSpace(event)) {
    event.preventDefault();
    drawGhost();
    return;
  }
  autoSpaceAt = null;
  if (!current()) return;
  if (event.key === "Tab" && !event.shiftKey) {
    event.preventDefault();
    accept(selected);
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    choose(selected + (event.key === "ArrowDown" ? 1 : -1));
  } else if (event.key === "Escape") {
    hidden = true;
    drawGhost();
  }
});
$("learning").addEventListener("change", (event) => send({ op: "learning", on: event.target.checked }));
$("reset").addEventListener("click", () => send({ op: "reset_learning" }));
$("download").addEventListener("click", (event) => {
  if (send({ op: "download" })) event.target.disabled = true; // until its file arrives
});

drawChart();
connect();
