// The live view's script (bundled with the mqtt client into view/view.js by `npm run build`): connects
// to the broker over MQTT WebSockets, keeps one record per cart under the prefix, renders them.
import mqtt from "mqtt";

const TIMELINE_MS = 5 * 60 * 1000;
const QUIET_DEFAULT_MS = 30 * 1000;
const KINDS = ["status", "state", "finding", "stats"];
const INPUT_TEXT = {
  live: "live imaging",
  frozen: "frozen",
  no_contact: "probe lifted",
  no_signal: "no signal",
  roi_mismatch: "ROI mismatch",
  corrupt_input: "corrupt input",
  source_waiting: "grabber waiting",
};

const carts = new Map();
let client = null;
let connState = "not connected";
let connDetail = "";
let predictionCounting = false;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "title") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// ---- settings: the URL query first, then what this browser stored -------------------------------

function loadSettings() {
  const q = new URLSearchParams(location.search);
  const saved = JSON.parse(localStorage.getItem("sonoedge-view") || "{}");
  const pick = (k, d) => q.get(k) ?? saved[k] ?? d;
  return {
    url: pick("url", defaultUrl()),
    username: pick("username", ""),
    password: sessionStorage.getItem("sonoedge-view-password") || "",
    prefix: pick("prefix", "sonoedge"),
    predictions: pick("predictions", "0") === "1",
    connect: q.get("connect") === "1",
  };
}

function defaultUrl() {
  const secure = location.protocol === "https:";
  const host = location.hostname || "localhost";
  return `${secure ? "wss" : "ws"}://${host}:${secure ? 8081 : 8080}`;
}

function saveSettings(s, rememberPassword) {
  const { url, username, prefix } = s;
  localStorage.setItem("sonoedge-view", JSON.stringify({ url, username, prefix, predictions: s.predictions ? "1" : "0" }));
  if (rememberPassword) sessionStorage.setItem("sonoedge-view-password", s.password);
  else sessionStorage.removeItem("sonoedge-view-password");
}

function readForm() {
  return {
    url: $("f-url").value.trim(),
    username: $("f-user").value,
    password: $("f-pass").value,
    prefix: $("f-prefix").value.trim().replace(/\/+$/, "") || "sonoedge",
    predictions: $("f-pred").checked,
  };
}

function fillForm(s) {
  $("f-url").value = s.url;
  $("f-user").value = s.username;
  $("f-pass").value = s.password;
  $("f-prefix").value = s.prefix;
  $("f-pred").checked = s.predictions;
}

// ---- MQTT ---------------------------------------------------------------------------------------

function connect(s) {
  if (client) client.end(true);
  carts.clear();
  predictionCounting = s.predictions;
  const opts = { clean: true, reconnectPeriod: 2000, connectTimeout: 10000, protocolVersion: 4 };
  if (s.username) opts.username = s.username;
  if (s.password) opts.password = s.password;
  setConn("connecting", s.url);
  client = mqtt.connect(s.url, opts);
  // The broker's reason (e.g. "Connection refused: Not authorized") stays shown after the close that follows it.
  let lastError = "";
  client.on("connect", () => {
    lastError = "";
    subscribe(s.prefix);
  });
  client.on("reconnect", () => setConn("reconnecting", lastError ? `${lastError}; ${s.url}` : s.url));
  client.on("close", () => setConn("disconnected", `${lastError ? `${lastError}; ` : ""}${s.url}: check the URL (ws:// or wss://, port of the broker's websockets listener), user and password`));
  client.on("error", (e) => {
    lastError = e.message;
    setConn("error", `${e.message}: check the URL, user, password and that the broker's certificate is trusted by this browser`);
  });
  client.on("message", (topic, payload, packet) => onMessage(s.prefix, topic, payload, packet.retain));
}

function subscribe(prefix) {
  const filters = KINDS.map((k) => `${prefix}/+/${k}`);
  if (predictionCounting) filters.push(`${prefix}/+/prediction`);
  client.subscribe(filters, { qos: 0 }, (err, granted) => {
    const refused = (granted || []).filter((g) => g.qos === 128).map((g) => g.topic);
    if (err || refused.length) setConn("subscribe refused", `${refused.join(", ") || err.message}: the broker's ACL must let this user read ${prefix}/+/#`);
    else setConn("connected", `subscribed to ${filters.join(", ")}`);
  });
}

function setConn(state, detail) {
  connState = state;
  connDetail = detail;
  render();
}

function onMessage(prefix, topic, payload, retained) {
  const rest = topic.slice(prefix.length + 1).split("/");
  if (rest.length !== 2) return;
  const [device, kind] = rest;
  const cart = cartFor(device);
  if (kind === "prediction") return countPrediction(cart);
  let msg;
  try {
    msg = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    cart.errors += 1;
    return;
  }
  heard(cart, msg, retained);
  HANDLERS[kind]?.(cart, msg, retained);
  render();
}

// ---- the per-cart record ------------------------------------------------------------------------

function cartFor(device) {
  if (!carts.has(device)) {
    carts.set(device, { device, status: null, state: null, stats: null, findings: [], timeline: [], lastHeard: null, retainedOnly: true, predTimes: [], errors: 0 });
  }
  return carts.get(device);
}

// A retained message may be old: its own time says when it was sent; a live one is heard now.
function heard(cart, msg, retained) {
  if (!retained) {
    cart.lastHeard = Date.now();
    cart.retainedOnly = false;
    return;
  }
  const t = Date.parse(msg.time || msg.since || "");
  if (Number.isFinite(t) && (cart.lastHeard === null || t > cart.lastHeard)) cart.lastHeard = Math.min(t, Date.now());
}

function countPrediction(cart) {
  cart.lastHeard = Date.now();
  cart.retainedOnly = false;
  cart.predTimes.push(Date.now());
}

const HANDLERS = {
  status(cart, msg) {
    cart.status = msg;
    if (msg.state !== "online") addSegment(cart, msg.state, Date.now());
  },
  state(cart, msg, retained) {
    const changed = !cart.state || cart.state.input !== msg.input || cart.state.frame !== msg.frame;
    cart.state = msg;
    if (!changed) return;
    const since = Date.parse(msg.since);
    const at = retained && Number.isFinite(since) ? Math.min(since, Date.now()) : Date.now();
    addSegment(cart, msg.input, at);
    if (!retained) cart.inputChanges = (cart.inputChanges || 0) + 1;
  },
  finding(cart, msg) {
    cart.findings.unshift({ ...msg, heardAt: Date.now() });
    cart.findings.length = Math.min(cart.findings.length, 6);
  },
  stats(cart, msg) {
    cart.stats = msg;
  },
};

function addSegment(cart, input, at) {
  const last = cart.timeline[cart.timeline.length - 1];
  if (last && last.input === input) return;
  cart.timeline.push({ input, at: Math.max(at, last ? last.at : at) });
  const cutoff = Date.now() - TIMELINE_MS;
  while (cart.timeline.length > 1 && cart.timeline[1].at < cutoff) cart.timeline.shift();
}

// How the cart is: offline/stopped from its status, stale when quiet too long, else ok.
function health(cart, now) {
  const quietMs = quietLimit(cart);
  const age = cart.lastHeard === null ? Infinity : now - cart.lastHeard;
  const st = cart.status?.state;
  if (st === "offline") return { health: "offline", stale: true, why: "connection lost (the broker sent its Last Will)" };
  if (st === "stopped") return { health: "stopped", stale: true, why: "the daemon was stopped" };
  if (age > quietMs) return { health: "stale", stale: true, why: `no message for more than ${Math.round(quietMs / 1000)} s` };
  return { health: "ok", stale: false, why: "messages arriving" };
}

function quietLimit(cart) {
  const interval = cart.stats?.interval_s;
  return interval ? Math.max(2 * interval * 1000, 5000) : QUIET_DEFAULT_MS;
}

// ---- rendering ----------------------------------------------------------------------------------

function render() {
  const now = Date.now();
  $("conn").textContent = `${connState}`;
  $("conn").dataset.state = connState;
  $("conn-detail").textContent = connDetail;
  const list = $("carts");
  const devices = [...carts.keys()].sort();
  list.replaceChildren(...devices.map((d) => renderCart(carts.get(d), now)));
  $("empty").hidden = devices.length > 0;
  $("state").textContent = JSON.stringify(exportState(now));
}

function renderCart(cart, now) {
  const h = health(cart, now);
  const input = cart.state?.input;
  return el(
    "article",
    { class: `cart health-${h.health}`, "data-device": cart.device, "data-health": h.health, "data-stale": String(h.stale), "data-input": input || "" },
    el("header", { class: "cart-head" }, el("h2", {}, cart.device), badge(h), el("span", { class: "age" }, ageText(cart, now))),
    el("p", { class: "why" }, h.why),
    renderStatus(cart),
    renderInput(cart),
    renderFinding(cart),
    renderTimeline(cart, now),
    renderEvents(cart),
    renderStats(cart, now),
  );
}

function badge(h) {
  const text = { ok: "● LIVE", stale: "◌ STALE", offline: "✕ OFFLINE", stopped: "■ STOPPED" }[h.health];
  return el("span", { class: `badge badge-${h.health}`, role: "status" }, text);
}

function ageText(cart, now) {
  if (cart.lastHeard === null) return "last message: unknown age";
  const s = Math.max(0, Math.round((now - cart.lastHeard) / 1000));
  const what = cart.retainedOnly ? " (retained)" : "";
  return `last message ${s < 120 ? `${s} s` : `${Math.round(s / 60)} min`} ago${what}`;
}

function renderStatus(cart) {
  const s = cart.status;
  if (!s) return el("p", { class: "muted" }, "no status yet");
  const parts = [`status ${s.state}`, `gate ${s.gate}`, `source ${s.source_state}`];
  return el("p", { class: "status" }, parts.join(" · "), s.detail ? el("span", { class: "detail" }, ` — ${s.detail}`) : null);
}

function renderInput(cart) {
  const st = cart.state;
  if (!st) return el("p", { class: "muted" }, "no input state yet");
  const since = new Date(st.since);
  return el(
    "p",
    { class: `input input-${st.input}` },
    el("span", { class: "input-label" }, INPUT_TEXT[st.input] || st.input),
    ` (${st.input}) since ${since.toLocaleTimeString()} · frame ${st.frame}`,
  );
}

function renderFinding(cart) {
  const f = cart.state?.finding;
  const box = el("section", { class: "finding", "aria-label": "current finding" });
  if (!f) {
    box.append(el("p", { class: "muted" }, cart.state?.input === "live" ? "no stable finding yet" : "no finding: imaging is not live"));
    return box;
  }
  const uncertain = f.label === "uncertain";
  box.dataset.label = f.label;
  box.append(
    el("p", { class: `finding-label${uncertain ? " uncertain" : ""}` }, uncertain ? "UNCERTAIN — the model names no label" : `model output: ${f.label}`),
    bars(f.probs, uncertain ? null : f.label),
  );
  return box;
}

function bars(probs, top) {
  const rows = Object.entries(probs || {}).sort((a, b) => b[1] - a[1]);
  return el(
    "div",
    { class: "bars" },
    ...rows.map(([label, p]) => {
      const pct = Math.round(p * 1000) / 10;
      const fill = el("span", { class: `bar-fill${label === top ? " top" : ""}` });
      fill.style.width = `${pct}%`;
      return el("div", { class: "bar", role: "meter", "aria-valuenow": String(pct), "aria-label": label }, el("span", { class: "bar-name" }, label), el("span", { class: "bar-track" }, fill), el("span", { class: "bar-pct" }, `${pct.toFixed(1)} %`));
    }),
  );
}

function renderTimeline(cart, now) {
  const start = now - TIMELINE_MS;
  const strip = el("div", { class: "strip", role: "img", "aria-label": timelineText(cart) });
  cart.timeline.forEach((seg, i) => {
    const from = Math.max(seg.at, start);
    const to = i + 1 < cart.timeline.length ? cart.timeline[i + 1].at : now;
    if (to <= start) return;
    const part = el("span", { class: `seg seg-${seg.input}`, title: `${seg.input} from ${new Date(seg.at).toLocaleTimeString()}` }, abbrev(seg.input));
    part.style.left = `${((from - start) / TIMELINE_MS) * 100}%`;
    part.style.width = `${Math.max(((to - from) / TIMELINE_MS) * 100, 0.3)}%`;
    strip.append(part);
  });
  return el("section", { class: "timeline" }, el("h3", {}, "last 5 minutes (input state)"), strip, el("div", { class: "strip-axis" }, el("span", {}, "−5 min"), el("span", {}, "now")));
}

function abbrev(input) {
  return { live: "L", frozen: "F", no_contact: "NC", no_signal: "NS", roi_mismatch: "ROI", corrupt_input: "C", source_waiting: "W", offline: "OFF", stopped: "STOP" }[input] || "?";
}

function timelineText(cart) {
  return cart.timeline.map((s) => `${new Date(s.at).toLocaleTimeString()} ${s.input}`).join(", ") || "no input states yet";
}

function renderEvents(cart) {
  const items = cart.findings.map((f) => {
    const what = f.event === "unfreeze" ? "unfreeze" : `${f.event}: ${f.label === "uncertain" ? "UNCERTAIN" : f.label}`;
    return el("li", { class: `event event-${f.event}` }, el("time", {}, new Date(f.captured_at).toLocaleTimeString()), ` ${what}`, f.probs ? el("span", { class: "muted" }, ` (${topProb(f.probs, f.label === "uncertain")})`) : null);
  });
  return el("section", { class: "events" }, el("h3", {}, "findings (freeze / unfreeze / change)"), items.length ? el("ul", {}, ...items) : el("p", { class: "muted" }, "none since this page connected"));
}

// The top probability; for an uncertain call without its label, so it never reads as one.
function topProb(probs, uncertain) {
  const [label, p] = Object.entries(probs).sort((a, b) => b[1] - a[1])[0] || ["-", 0];
  return uncertain ? `no label named; top probability ${(p * 100).toFixed(1)} %` : `${label} ${(p * 100).toFixed(1)} %`;
}

function renderStats(cart, now) {
  const s = cart.stats;
  if (!s) return el("p", { class: "muted" }, "no stats yet");
  const ms = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(1)} ms`);
  const drops = Object.entries(s.dropped || {}).map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`).join(", ");
  const temp = s.system?.soc_temp_c;
  const rows = [
    ["fps in / inferred", `${s.fps_in.toFixed(1)} / ${s.fps_inferred.toFixed(1)}`],
    ["inference p50 / p95", `${ms(s.inference_ms_p50)} / ${ms(s.inference_ms_p95)}`],
    ["dropped", drops],
    ["broker link", `${s.connected ? "connected" : "disconnected"}, ${s.reconnects} reconnects, queue ${s.queue_depth}`],
  ];
  if (temp !== null && temp !== undefined) rows.push(["SoC temperature", `${temp.toFixed(1)} °C`]);
  if (predictionCounting) rows.push(["predictions", `${predictionRate(cart, now).toFixed(1)} /s`]);
  return el("dl", { class: "stats" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function predictionRate(cart, now) {
  cart.predTimes = cart.predTimes.filter((t) => now - t < 10000);
  return cart.predTimes.length / 10;
}

// What the page shows, as data: for scripts and the browser test (read from <pre id="state">).
function exportState(now) {
  const out = { connection: connState, carts: {} };
  for (const [d, c] of carts) {
    const h = health(c, now);
    out.carts[d] = {
      health: h.health,
      stale: h.stale,
      status: c.status?.state ?? null,
      input: c.state?.input ?? null,
      finding: c.state?.finding?.label ?? null,
      inputs_seen: [...new Set(c.timeline.map((s) => s.input))],
      input_changes: c.inputChanges || 0,
      findings: c.findings.map((f) => ({ event: f.event, label: f.label, captured_at: f.captured_at })),
      age_ms: c.lastHeard === null ? null : now - c.lastHeard,
    };
  }
  return out;
}

// ---- start --------------------------------------------------------------------------------------

function start() {
  const s = loadSettings();
  fillForm(s);
  $("settings").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = readForm();
    saveSettings(f, $("f-remember").checked);
    connect(f);
  });
  setInterval(render, 1000);
  render();
  if (s.connect) connect(s);
}

start();
