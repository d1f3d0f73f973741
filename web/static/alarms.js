// Alarms: the active list (priority colours, acknowledge and shelve with a
// comment), kept current by the live feed; an optional sound for new
// urgent and high alarms; the ISA-18.2 statistics of the last day; the
// journal with filters.
(function () {
  "use strict";
  const { get, api, el, fmtValue, fmtTime, fmtDateTime, alarmName } = Calx;
  const body = document.querySelector("#active tbody");
  const note = document.getElementById("active-note");
  const canAct = ["admin", "engineer", "operator"].includes(document.body.dataset.role);
  const form = document.getElementById("act");
  let acting = null; // {alarm, kind: "ack" | "shelve" | "unshelve"}

  const heard = new Set(); // alarms whose raise has sounded
  const sound = document.getElementById("sound");
  sound.checked = localStorage.getItem("calx-alarm-sound") === "1";
  sound.addEventListener("change", () => localStorage.setItem("calx-alarm-sound", sound.checked ? "1" : "0"));
  let audio = null;
  function beep() {
    try {
      audio = audio || new AudioContext();
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = 880;
      g.gain.setValueAtTime(0.15, audio.currentTime);
      g.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.6);
      o.connect(g).connect(audio.destination);
      o.start();
      o.stop(audio.currentTime + 0.6);
    } catch (e) { /* no audio here */ }
  }

  async function loadActive() {
    let j;
    try { j = await get("/api/v1/alarms?active=true"); } catch (e) { note.textContent = e.message; return; }
    body.textContent = "";
    let fresh = false;
    for (const a of j.alarms) {
      const key = a.path + "@" + a.since;
      if (a.state === "active_unacked" && (a.priority === "urgent" || a.priority === "high") && !a.shelved_until && !heard.has(key)) {
        if (heard.size || document.body.dataset.loaded) fresh = true;
        heard.add(key);
      }
      const actions = el("td", {});
      if (canAct) {
        if (a.state === "active_unacked" || a.state === "cleared_unacked") actions.append(el("button", { type: "button", text: "Ack", onclick: () => ask(a, "ack") }));
        actions.append(a.shelved_until ? el("button", { type: "button", text: "Unshelve", onclick: () => ask(a, "unshelve") })
          : el("button", { type: "button", text: "Shelve", onclick: () => ask(a, "shelve") }));
      }
      body.append(el("tr", { "data-path": a.path, class: a.state + (a.shelved_until || a.suppressed ? " shelved" : "") },
        el("td", {}, el("span", { class: "prio prio-" + a.priority, text: a.priority })),
        el("td", { text: alarmName(a), title: a.path + (a.message ? "\n" + a.message : "") }),
        el("td", { class: "state", text: a.state.replace("_", " ") + (a.shelved_until ? " (shelved until " + fmtTime(a.shelved_until) + ")" : "") + (a.suppressed ? " (suppressed)" : "") }),
        el("td", { class: "wide-only", text: a.text || fmtValue(a.value) + " / " + fmtValue(a.limit) }),
        el("td", { class: "wide-only", text: fmtDateTime(a.since) }),
        actions));
    }
    if (fresh && sound.checked) beep();
    document.body.dataset.loaded = "1";
    note.textContent = j.count ? j.count + " alarm" + (j.count === 1 ? "" : "s") : "No alarm needs attention.";
  }

  function ask(a, kind) {
    acting = { alarm: a, kind };
    form.hidden = false;
    document.getElementById("act-what").textContent = { ack: "Acknowledge", shelve: "Shelve", unshelve: "Unshelve" }[kind] + " " + alarmName(a);
    document.getElementById("act-minutes-l").hidden = kind !== "shelve";
    document.getElementById("act-go").textContent = { ack: "Acknowledge", shelve: "Shelve", unshelve: "Unshelve" }[kind];
    document.getElementById("act-comment").value = "";
    document.getElementById("act-comment").focus();
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!acting) return;
    const comment = document.getElementById("act-comment").value.trim();
    const { alarm, kind } = acting;
    try {
      if (kind === "ack") await api("POST", "/api/v1/alarms/ack", { path: alarm.path, comment });
      else await api("POST", "/api/v1/alarms/shelve", { path: alarm.path, minutes: kind === "shelve" ? Number(document.getElementById("act-minutes").value) : 0, comment });
      form.hidden = true;
      acting = null;
    } catch (err) { note.textContent = err.message; }
    loadActive();
    loadJournal();
  });
  document.getElementById("act-cancel").addEventListener("click", () => { form.hidden = true; acting = null; });

  const statsEl = document.getElementById("stats");
  function short(path) {
    const [device, name] = path.split("/_alarms/");
    return device.split("/").slice(1).join("/") + " · " + name;
  }
  async function loadStats() {
    let j;
    try { j = await get("/api/v1/alarms/statistics"); } catch (e) { statsEl.textContent = e.message; return; }
    const pct = (x) => (100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0) + " %";
    let s = j.raised + " alarm" + (j.raised === 1 ? "" : "s") + " raised, " +
      j.per_window.average.toFixed(j.per_window.average < 1 ? 2 : 1) + " per 10 min on average (ISA-18.2 aims at 1 or fewer), at most " + j.per_window.max +
      "; in flood (more than " + j.flood_above + " per 10 min) " + pct(j.flood_share) + " of the time";
    if (j.most_frequent.length) s += "; most frequent: " + j.most_frequent.slice(0, 3).map((c) => short(c.alarm) + " ×" + c.count).join(", ");
    if (j.chattering.length) s += "; chattering: " + j.chattering.map((c) => short(c.alarm)).join(", ");
    if (j.stale.length) s += "; standing over 24 h: " + j.stale.length;
    statsEl.textContent = s + ".";
  }

  const jbody = document.querySelector("#journal tbody");
  const jnote = document.getElementById("journal-note");
  async function loadJournal() {
    const alarm = document.getElementById("j-alarm").value.trim();
    const ev = document.getElementById("j-event").value;
    const hours = Number(document.getElementById("j-since").value);
    const q = new URLSearchParams({ from: new Date(Date.now() - hours * 3600e3).toISOString(), limit: "500" });
    if (alarm) q.set("alarm", alarm);
    if (ev) q.set("event", ev);
    let j;
    try { j = await get("/api/v1/alarms/journal?" + q); } catch (e) { jnote.textContent = e.message; return; }
    jbody.textContent = "";
    for (const t of j.transitions.slice().reverse()) {
      jbody.append(el("tr", {},
        el("td", { text: fmtDateTime(t.ts) }),
        el("td", { text: short(t.alarm), title: t.alarm }),
        el("td", { text: t.event }),
        el("td", { class: "wide-only", text: (t.state || "").replace("_", " ") }),
        el("td", { class: "wide-only", text: [t.user, t.comment].filter(Boolean).join(": ") })));
    }
    jnote.textContent = j.count + " entries";
  }
  document.getElementById("jfilter").addEventListener("submit", (e) => { e.preventDefault(); loadJournal(); });

  let timer = 0;
  document.addEventListener("calx-alarms", () => {
    if (!timer) timer = setTimeout(() => { timer = 0; loadActive(); loadStats(); }, 500);
  });
  // Alarm transitions come with the live feed, without values.
  Calx.live([], { onResume: loadActive });
  loadActive();
  loadStats();
  loadJournal();
  setInterval(loadActive, 30000);
  setInterval(loadStats, 60000);
})();
