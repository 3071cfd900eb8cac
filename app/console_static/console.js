// The console's page: one EventSource for the state, the picture fetched when the state says a new one is there,
// and every change sent as JSON with the console's token (the server refuses anything else).
"use strict";
const $ = (id) => document.getElementById(id);
let token = null, source = null, lastPicture = 0, state = {};

function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }
function duration(s) { const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60; return (h ? h + " h " : "") + m + " min " + Math.floor(s % 60) + " s"; }

async function send(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": token || "" },
                                body: JSON.stringify(body || {}), credentials: "same-origin" });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.error || r.statusText);
  return answer;
}

function say(id, text, bad) { const e = $(id); e.textContent = text; e.className = bad ? "error" : ""; }

async function start() {
  const s = await (await fetch("/api/session", { credentials: "same-origin" })).json();
  if (!s.logged_in) { $("login").hidden = false; $("password").focus(); return; }
  token = s.token; $("login").hidden = true;
  connect(); loadSettings();
}

function connect() {
  if (source) source.close();
  const watching = !document.hidden && currentPage() === "see";
  source = new EventSource("/api/stream" + (watching ? "?picture=1" : ""));
  source.onmessage = (m) => { state = JSON.parse(m.data); render(); };
  source.onerror = () => { $("running").textContent = "not answering"; $("running").className = "pill bad"; };
}

function bars(list, items) {
  list.replaceChildren(...items.map(([name, p]) => {
    const li = el("li"); const m = el("meter"); m.min = 0; m.max = 1; m.value = p;
    li.append(el("span", name), m, el("span", (p * 100).toFixed(0) + " %")); return li; }));
}

function render() {
  const s = state, c = s.controls || {};
  $("running").textContent = s.open ? "running" : "closed (opening hours)";
  $("running").className = "pill " + (s.server && s.server.alive ? "ok" : "bad");
  $("heard").textContent = s.heard && s.heard.label ? s.heard.label : "listening";
  $("on-screen").textContent = s.on_screen ? "on screen: " + s.on_screen + (c.forced_label ? " (forced)" : "") : "";
  bars($("top"), (s.heard && s.heard.top) || []);
  bars($("tags"), (s.heard && s.heard.tags) || []);
  $("mode").textContent = s.mode; $("state").textContent = s.status;
  $("open").textContent = (s.open ? "open" : "closed") + (s.open_override ? " (opened by hand)" : "") + (s.hours ? " · hours " + s.hours : " · always");
  $("uptime").textContent = duration(s.uptime_s || 0);
  $("fps").textContent = s.fps + " fps"; $("keyframes").textContent = s.keyframes_per_s + " /s";
  $("mic").value = s.mic_dbfs; $("mic-db").textContent = s.mic_dbfs + " dBFS";
  const sv = s.server || {};
  $("server").textContent = (sv.alive ? "answering" : "not answering") + (sv.round_trip_ms != null ? " · " + sv.round_trip_ms + " ms round trip" : "") +
    " · " + (sv.local ? "on this machine, restarted " + sv.restarts + "×" : sv.address) + " · reconnects " + sv.reconnects;
  const m = s.machine || {}, rows = [["CPU", m.cpu_percent + " %"], ["memory", m.memory_used_gb + " of " + m.memory_total_gb + " GB"],
    ["disk", m.disk_free_gb + " GB free (" + m.disk_percent + " % used)"]];
  if (m.gpu) rows.push(["GPU", m.gpu.name + " · " + m.gpu.percent + " % · " + m.gpu.memory_used_mb + " of " + m.gpu.memory_total_mb + " MB"]);
  $("machine").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  $("events").replaceChildren(...(s.events || []).map((e) => el("li", clock(e.t) + "  " + e.label + " (" + (e.confidence * 100).toFixed(0) + " %)")));
  $("log").replaceChildren(...(s.log || []).slice().reverse().map((l) => el("li", clock(l.t) + " " + l.level + " " + l.message, l.level)));
  if (s.picture && s.picture !== lastPicture && currentPage() === "see") {
    lastPicture = s.picture; $("picture").src = "/api/picture.jpg?n=" + s.picture;
    $("picture-caption").textContent = "the screen at " + new Date().toLocaleTimeString();
  }
  // steer
  for (const [id, on] of [["freeze", c.frozen], ["blackout", c.blackout], ["hud", c.hud]]) $(id).classList.toggle("on", !!on);
  if (document.activeElement !== $("intensity")) { $("intensity").value = c.intensity; }
  if (document.activeElement !== $("zoom")) { $("zoom").value = c.zoom; }
  $("intensity-value").textContent = Number(c.intensity).toFixed(2); $("zoom-value").textContent = Number(c.zoom).toFixed(2);
  const select = $("class");
  if (select.options.length !== (s.classes || []).length + 1) {
    select.replaceChildren(el("option", "what it hears"), ...(s.classes || []).map((n) => { const o = el("option", n); o.value = n; return o; }));
    select.options[0].value = "";
  }
  if (document.activeElement !== select) select.value = c.forced_label || "";
  const sounds = $("test-sound");
  if (sounds.options.length !== (s.test_sounds || []).length) sounds.replaceChildren(...(s.test_sounds || []).map((n) => el("option", n)));
  $("hours").textContent = (s.hours ? "Hours: " + s.hours : "Always open") + ". Now " + (s.open ? "open" : "closed") + ".";
  $("open-now").textContent = s.open_override ? "Back to the hours" : "Open now";
  $("server-steer").textContent = sv.local ? "On this machine; answering: " + (sv.alive ? "yes" : "no") : "Runs on " + sv.address;
  $("restart").disabled = !sv.local;
}

async function control(name, value) {
  try { await send("/api/control", { control: name, value: value }); say("steer-message", ""); }
  catch (e) { say("steer-message", e.message, true); }
}

document.querySelectorAll("[data-toggle]").forEach((b) => b.addEventListener("click", () => control(b.dataset.toggle)));
$("intensity").addEventListener("change", (e) => control("intensity", Number(e.target.value)));
$("zoom").addEventListener("change", (e) => control("zoom", Number(e.target.value)));
$("layer-set").addEventListener("click", () => control("layer", $("layer").value));
$("class").addEventListener("change", (e) => control("class", e.target.value));
$("play").addEventListener("click", async () => {
  try { await send("/api/test-sound", { sound: $("test-sound").value }); say("steer-message", "playing " + $("test-sound").value + ": watch what it hears"); }
  catch (e) { say("steer-message", e.message, true); } });
$("open-now").addEventListener("click", async () => {
  try { await send("/api/open", { open: !state.open_override }); } catch (e) { say("steer-message", e.message, true); } });
$("restart").addEventListener("click", async () => {
  if (!confirm("Restart the inference server? The picture falls back to the seeds for a few seconds.")) return;
  try { await send("/api/server/restart"); say("steer-message", "the server restarts"); } catch (e) { say("steer-message", e.message, true); } });

async function loadSettings() {
  const r = await fetch("/api/settings", { credentials: "same-origin" });
  if (!r.ok) return;
  const s = await r.json();
  $("settings-file").textContent = s.file ? "Saved to the venue file " + s.file.split("/").pop() + ". Green: applied at once; the rest from the next start."
                                          : "The show runs without a venue file (--config): settings cannot be saved.";
  $("settings-file").title = s.file || "";
  $("settings-table").tBodies[0].replaceChildren(...s.settings.map((x) => {
    const tr = el("tr"), input = el("input"); input.id = "setting-" + x.key;
    input.value = typeof x.value === "string" ? x.value : (x.value === null ? "" : JSON.stringify(x.value));
    input.placeholder = x.value === null ? "(left out)" : "";
    const save = el("button", "Save"); save.disabled = !s.file;
    save.addEventListener("click", async () => {
      // Numbers, true/false and [lists] as JSON; an empty box leaves the setting out; anything else is text.
      let value = input.value.trim() === "" ? null : input.value;
      if (value !== null && /^[-\d\[]|^(true|false)$/.test(value.trim())) { try { value = JSON.parse(value); } catch (e) { /* text */ } }
      try { const a = await send("/api/settings", { key: x.key, value: value });
            say("settings-message", x.key + " saved" + (a.live ? " and applied" : "; used from the next start")); }
      catch (e) { say("settings-message", e.message, true); } });
    const name = el("td"); name.append(el("div", x.key), el("div", x.live ? "applied at once" : "next start", x.live ? "live" : "restart"));
    const value = el("td"); value.append(input);
    const takes = el("td", x.takes, "takes"); const action = el("td"); action.append(save);
    tr.append(name, value, takes, action); return tr; }));
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try { await send("/api/login", { password: $("password").value }); $("password").value = ""; say("login-error", ""); start(); }
  catch (err) { say("login-error", err.message, true); }
});

function currentPage() { return (location.hash || "#see").slice(1); }
function showPage() {
  const page = currentPage();
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== "page-" + page; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("current", a.dataset.page === page));
  if (token) connect();  // the picture is read back only while the See page is in view
}
window.addEventListener("hashchange", showPage);
document.addEventListener("visibilitychange", () => { if (token) connect(); });
showPage(); start();
