// snug's page: a chat with any served model, streamed, and the memory budget
// as one bar that shows who holds it (the process and HTTP server, each loaded
// model, free), refreshed every second from GET /v1/memory. No build step, no
// dependencies: the server embeds these files as they are.
"use strict";

const COLORS = ["#2f6fde", "#e07b39", "#2a9d6f", "#9b59b6", "#d64550", "#c9a227", "#1f9bb3", "#7a8b99"];
const $ = (id) => document.getElementById(id);
const chats = new Map();  // model -> [{role, content}]
let colorOf = new Map();  // model -> color, stable for the page's life
let busy = false;

function bytes(n) {
  if (n == null) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; ++i; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function headers(json) {
  const h = {};
  const key = $("key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function getJson(path) {
  const r = await fetch(path, { headers: headers(false) });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.status + " " + r.statusText);
  return body;
}

function color(name) {
  if (!colorOf.has(name)) colorOf.set(name, COLORS[colorOf.size % COLORS.length]);
  return colorOf.get(name);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function refreshModels() {
  const list = await getJson("/v1/models");
  const sel = $("model");
  const keep = sel.value;
  sel.replaceChildren(...list.data.map((m) =>
    el("option", { value: m.id }, m.id + (m.state === "too_large" ? " (too large)" : ""))));
  if (keep && list.data.some((m) => m.id === keep)) sel.value = keep;
}

function drawBar(mem) {
  const b = mem.budget || {};
  const limit = b.limit_bytes || 0;
  const bar = $("bar");
  const legend = $("legend");
  const segs = [];
  const items = [];
  const pct = (n) => (limit > 0 ? (100 * n / limit) : 0).toFixed(3) + "%";
  if (limit > 0) {
    segs.push(el("div", { class: "seg base", "data-kind": "base", style: "width:" + pct(b.base_reserved_bytes),
                          title: "process and HTTP server: " + bytes(b.base_reserved_bytes) }));
    items.push([getComputedStyle(document.documentElement).getPropertyValue("--base"),
                "process and HTTP server", b.base_reserved_bytes]);
  }
  for (const m of mem.models) {
    if (!m.reserved_bytes) continue;
    segs.push(el("div", { class: "seg model", "data-kind": "model", "data-name": m.name,
                          style: "width:" + pct(m.reserved_bytes) + ";background:" + color(m.name),
                          title: m.name + " (" + m.state + "): " + bytes(m.reserved_bytes) }));
    items.push([color(m.name), m.name, m.reserved_bytes]);
  }
  if (limit > 0) {
    segs.push(el("div", { class: "seg free", "data-kind": "free", style: "width:" + pct(b.available_bytes),
                          title: "free: " + bytes(b.available_bytes) }));
    items.push(["#eef0f3", "free", b.available_bytes]);
  }
  bar.replaceChildren(...segs);
  legend.replaceChildren(...items.map(([c, name, n]) =>
    el("li", {}, el("span", { class: "sw", style: "background:" + c }), name + " " + bytes(n))));
  $("budget-line").textContent = limit > 0
    ? "Budget " + bytes(limit) + ": " + bytes(b.reserved_bytes) + " reserved, " + bytes(b.available_bytes) + " free"
    : "No budget reported";
  const p = mem.process || {};
  $("rss-line").textContent = "Resident now " + bytes(p.resident_bytes) + ", peak " + bytes(p.peak_resident_bytes);
}

function drawTables(mem) {
  $("models").tBodies[0].replaceChildren(...mem.models.map((m) => {
    const kv = m.kv_blocks;
    const used = kv ? kv.used + kv.cached : 0;
    const frac = kv && kv.total ? used / kv.total : 0;
    return el("tr", { "data-model": m.name },
      el("td", {}, el("span", { class: "sw", style: "display:inline-block;width:10px;height:10px;border-radius:3px;margin-right:6px;background:" + color(m.name) }), m.name),
      el("td", {}, m.closing
        ? el("span", { class: "state closing", title: "finishing its requests to make room for a waiting model" }, "closing")
        : el("span", { class: "state " + m.state, title: m.too_large || "" }, m.state.replace("_", " "))),
      el("td", {}, bytes(m.planned_bytes)),
      el("td", {}, kv ? el("span", { class: "mini" }, el("span", { style: "width:" + (100 * frac).toFixed(1) + "%" })) : "",
                   kv ? used + " / " + kv.total : "-"),
      el("td", {}, m.requests_in_flight + (m.requests_waiting ? " + " + m.requests_waiting + " waiting" : "")),
      el("td", {}, m.loads + " / " + m.evictions));
  }));
  const tenants = mem.tenants || [];
  $("tenants-box").hidden = tenants.length === 0;
  $("tenants").tBodies[0].replaceChildren(...tenants.map((t) => el("tr", {},
    el("td", {}, t.name),
    el("td", {}, t.requests_in_flight + (t.max_concurrent ? " of " + t.max_concurrent : "")),
    el("td", {}, t.tokens_last_minute + (t.tokens_per_minute ? " of " + t.tokens_per_minute : "")))));
  $("ledger").tBodies[0].replaceChildren(...Object.entries(mem.ledger_bytes || {}).map(([k, v]) =>
    el("tr", {}, el("td", {}, k), el("td", {}, bytes(v)))));
}

async function refreshMemory() {
  try {
    const mem = await getJson("/v1/memory");
    drawBar(mem);
    drawTables(mem);
    $("health").textContent = "serving";
    $("health").className = "pill ok";
    document.body.dataset.memoryUpdates = String(Number(document.body.dataset.memoryUpdates || 0) + 1);
  } catch (e) {
    $("health").textContent = e.message;
    $("health").className = "pill bad";
  }
}

function addMessage(role, text) {
  const m = el("div", { class: "msg " + role }, el("span", { class: "who" }, role === "user" ? "you" : $("model").value));
  const body = el("span", { class: "text" }, text);
  m.append(body);
  $("log").append(m);
  $("log").scrollTop = $("log").scrollHeight;
  return { box: m, body };
}

function drawChat() {
  $("log").replaceChildren();
  for (const m of chats.get($("model").value) || []) addMessage(m.role, m.content);
}

async function send(text) {
  const model = $("model").value;
  if (!text.trim() || busy || !model) return;
  busy = true;
  $("go").disabled = true;
  if (!chats.has(model)) chats.set(model, []);
  const history = chats.get(model);
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  let answer = "";
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(true),
      body: JSON.stringify({ model, messages: history, stream: true, max_tokens: 256,
                             temperature: Number($("temp").value) || 0 }),
    });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || r.status + " " + r.statusText);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            answer += delta.content;
            out.body.textContent = answer;
            $("log").scrollTop = $("log").scrollHeight;
          }
        }
      }
    }
    history.push({ role: "assistant", content: answer });
  } catch (e) {
    out.box.className = "msg error";
    out.body.textContent = "Error: " + e.message;
    history.pop();
  } finally {
    out.box.dataset.done = "1";
    busy = false;
    $("go").disabled = false;
    refreshMemory();
  }
}

$("key").value = localStorage.getItem("snug.key") || "";
$("key").addEventListener("change", () => {
  localStorage.setItem("snug.key", $("key").value.trim());
  refreshModels().catch(() => {});
  refreshMemory();
});
$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("prompt").value;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("send").requestSubmit();
  }
});
$("model").addEventListener("change", drawChat);
$("clear").addEventListener("click", () => { chats.delete($("model").value); drawChat(); });

refreshModels().catch((e) => { $("health").textContent = e.message; $("health").className = "pill bad"; })
  .finally(refreshMemory);
setInterval(refreshMemory, 1000);
