// The console's page: one EventSource for the state, the picture fetched when the state says a new one is there,
// and every change sent as JSON with the console's token (the server refuses anything else).
"use strict";
const $ = (id) => document.getElementById(id);
let token = null, source = null, lastPicture = 0, state = {};

function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }
function duration(s) { const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60; return (h ? h + " h " : "") + m + " min " + Math.floor(s % 60) + " s"; }

async function send(path, body, type) {
  // JSON by default; a file (a picture) is sent as it is, with its own type.
  const r = await fetch(path, { method: "POST", credentials: "same-origin",
                                headers: { "Content-Type": type || "application/json", "X-CSRF-Token": token || "" },
                                body: type ? body : JSON.stringify(body || {}) });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.error || r.statusText);
  return answer;
}

function say(id, text, bad) { const e = $(id); e.textContent = text; e.className = bad ? "error" : ""; }

async function start() {
  const s = await (await fetch("/api/session", { credentials: "same-origin" })).json();
  if (!s.logged_in) { $("login").hidden = false; $("password").focus(); return; }
  token = s.token; $("login").hidden = true;
  connect(); loadSettings(); if (currentPage() === "teach") loadTeach();
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
  $("mode").textContent = s.mode; $("state").textContent = s.status || s.state;
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
  renderTake(s);
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

// teach: the draft and the taught sounds come from /api/teach (again after every change); the take being made and
// what the installation hears come with the state, four times a second.
let teach = null, watching = null, pictureShown = 0;
const TAKE_SAYS = { countdown: (t) => "get ready: " + t.seconds_left + "…", waiting: () => "make the sound now",
                    recording: () => "recording…", done: () => "cutting…" };

async function loadTeach() {
  const r = await fetch("/api/teach", { credentials: "same-origin" });
  if (!r.ok) return;
  teach = await r.json();
  const as = $("teach-as"), seed = $("teach-seed");
  if (as.options.length === 1) as.append(...teach.builtins.map((n) => { const o = el("option", n); o.value = n; return o; }));
  if (seed.options.length === 1) seed.append(...teach.seeds.map((n) => { const o = el("option", n); o.value = n; return o; }));
  $("teach-upload-hint").textContent = "JPEG, PNG or WebP, up to " + teach.max_picture_mb + " MB.";
  renderDraft(teach.draft);
  $("teach-none").hidden = teach.taught.length > 0;
  $("teach-table").hidden = teach.taught.length === 0;
  $("teach-table").tBodies[0].replaceChildren(...teach.taught.map((t) => {
    const tr = el("tr"), img = el("img", undefined, "thumb");
    img.src = "/api/teach/sounds/" + t.name + ".jpg?t=" + encodeURIComponent(t.created); img.alt = "the picture of " + t.name;
    const pic = el("td"); pic.append(img);
    const tryIt = el("button", "Try"); tryIt.addEventListener("click", () => tryLive(t.shows));
    const forget = el("button", "Forget", "danger");
    forget.addEventListener("click", async () => {
      if (!confirm("Forget " + t.name + "? Its examples and picture are deleted; the installation stops hearing it within seconds.")) return;
      try { await send("/api/teach/forget", { name: t.name }); say("teach-message", "forgot " + t.name); loadTeach(); }
      catch (e) { say("teach-message", e.message, true); } });
    const actions = el("td", undefined, "actions"); actions.append(tryIt, forget);
    tr.append(pic, el("td", t.name, "name"), el("td", t.as ? t.as : "its own picture"), el("td", String(t.examples)), actions);
    return tr; }));
}

function renderDraft(d) {
  teach.draft = d;
  const [least, most] = teach.examples, n = d.examples.length;
  $("teach-count").textContent = n;
  $("teach-examples").replaceChildren(...d.examples.map((x) => {
    const li = el("li"), audio = el("audio"); audio.src = "/api/teach/takes/" + x.id + ".wav"; audio.preload = "none";
    const play = el("button", "Play"); play.addEventListener("click", () => { audio.currentTime = 0; audio.play(); });
    const drop = el("button", "Drop", "danger");
    drop.addEventListener("click", async () => {
      try { renderDraft((await send("/api/teach/drop", { example: x.id })).draft); } catch (e) { say("teach-message", e.message, true); } });
    const info = el("span", "take " + x.id + " · " + x.seconds.toFixed(1) + " s · loudest " + x.dbfs.toFixed(0) + " dBFS", "take-info");
    li.append(info, play, drop, audio);
    if (x.problem) li.append(el("div", x.problem, "error problem"));
    return li; }));
  const seed = d.picture && d.picture.startsWith("seed:") ? d.picture.slice(5) : "";
  if (document.activeElement !== $("teach-seed")) $("teach-seed").value = seed;
  $("teach-picture").hidden = !d.picture;
  if (d.picture) $("teach-picture").src = "/api/teach/picture.jpg?n=" + (++pictureShown);
  $("teach-record").disabled = n >= most;
  renderReady();
}

function renderReady() {
  if (!teach) return;
  const d = teach.draft, [least] = teach.examples, as = $("teach-as").value, n = d.examples.length, needs = [];
  $("teach-picture-card").classList.toggle("dim", !!as);
  $("teach-picture-hint").textContent = as ? "It shows " + as + "'s picture: no picture of its own is needed."
                                           : "What the screen dreams from when it hears the sound.";
  if (!$("teach-name").value.trim()) needs.push("a name");
  if (n < least) needs.push((least - n) + " more example" + (least - n > 1 ? "s" : ""));
  if (d.examples.some((x) => x.problem)) needs.push("the takes marked in red dropped");
  if (!as && !d.picture) needs.push("a picture");
  $("teach-ready").textContent = needs.length ? "Needs " + needs.join(", ") + "." : "Ready to save.";
  $("teach-save").disabled = needs.length > 0;
}

function renderTake(s) {
  const take = s.take;
  $("teach-take").textContent = take ? TAKE_SAYS[take.state](take) : "ready";
  $("teach-take").className = "take-state" + (take ? " " + take.state : "");
  const db = take && take.state !== "countdown" ? take.level : s.mic_dbfs;
  $("teach-level").value = db; $("teach-db").textContent = db + " dBFS";
  if (watching) {
    const heard = s.heard && s.heard.label;
    $("teach-heard").textContent = heard || "listening";
    $("teach-heard").classList.toggle("heard-it", heard === watching);
    $("teach-heard-detail").textContent = heard ? (heard === watching ? "that is " + watching + ", " : "not " + watching + ": ") +
      (s.heard.confidence * 100).toFixed(0) + " % sure" : "waiting for " + watching;
  }
}

function tryLive(shows) {
  watching = shows; $("teach-try").hidden = false;
  $("teach-try").scrollIntoView({ block: "nearest" });
}

$("teach-name").addEventListener("input", renderReady);
$("teach-as").addEventListener("change", renderReady);
$("teach-record").addEventListener("click", async () => {
  $("teach-record").disabled = true; say("teach-message", "");
  try { const a = await send("/api/teach/record"); renderDraft(a.draft); }
  catch (e) { say("teach-message", e.message, true); $("teach-record").disabled = false; }
});
$("teach-seed").addEventListener("change", async (e) => {
  if (!e.target.value) return;
  try { renderDraft((await send("/api/teach/seed", { seed: e.target.value })).draft); say("teach-message", ""); }
  catch (err) { say("teach-message", err.message, true); }
});
$("teach-upload").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  try { renderDraft((await send("/api/teach/picture", file, file.type || "application/octet-stream")).draft);
        say("teach-message", "picture: " + file.name); }
  catch (err) { say("teach-message", err.message, true); }
  e.target.value = "";
});
$("teach-save").addEventListener("click", async () => {
  const name = $("teach-name").value.trim();
  $("teach-save").disabled = true; say("teach-message", "saving " + name + "… (a few seconds)");
  try {
    const a = await send("/api/teach/save", { name: name, as: $("teach-as").value || null });
    say("teach-message", "taught " + a.taught + (a.shows !== a.taught ? ", shown as " + a.shows : "") + ": try it live below");
    $("teach-name").value = ""; $("teach-as").value = "";
    await loadTeach(); tryLive(a.shows);
  } catch (e) { say("teach-message", e.message, true); renderReady(); }
});
$("teach-clear").addEventListener("click", async () => {
  if (teach && teach.draft.examples.length && !confirm("Drop every take and the picture, and start again?")) return;
  try { renderDraft((await send("/api/teach/clear")).draft); say("teach-message", ""); } catch (e) { say("teach-message", e.message, true); }
});

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
  if (token && page === "teach") loadTeach();
}
window.addEventListener("hashchange", showPage);
document.addEventListener("visibilitychange", () => { if (token) connect(); });
showPage(); start();
