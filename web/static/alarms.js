// Alarms and cycles: the alarm list with acknowledge and shelve, kept
// current by the live feed's "alarms" events, a line of the last day's
// alarm statistics, and a bar chart of a
// cycle aggregate (energy per cycle) of the machine chosen.
(function () {
  "use strict";
  const body = document.querySelector("#alarms tbody");
  const note = document.getElementById("alarms-note");
  const count = document.getElementById("alarm-count");

  async function api(method, url, payload) {
    const res = await fetch(url, {
      method, credentials: "same-origin",
      headers: payload ? { "Content-Type": "application/json" } : {},
      body: payload ? JSON.stringify(payload) : undefined,
    });
    if (res.status === 401) { window.location.assign("/login"); return null; }
    const j = await res.json();
    if (!res.ok) throw new Error(j.error || res.statusText);
    return j;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "—";
    return Math.abs(v) < 10 ? v.toFixed(2) : v.toFixed(1);
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function button(td, label, onClick) {
    const b = document.createElement("button");
    b.textContent = label;
    b.addEventListener("click", async () => {
      b.disabled = true;
      try { await onClick(); } catch (e) { note.textContent = e.message; }
      loadAlarms();
    });
    td.appendChild(b);
  }

  async function loadAlarms() {
    let j;
    try { j = await api("GET", "/api/v1/alarms?active=true"); } catch (e) { note.textContent = e.message; return; }
    if (!j) return;
    body.textContent = "";
    count.textContent = j.count ? j.count + " alarm" + (j.count > 1 ? "s" : "") : "no alarms";
    count.className = j.alarms.some((a) => a.state === "active_unacked" && !a.shelved_until && !a.suppressed) ? "active" : "muted";
    for (const a of j.alarms) {
      const tr = document.createElement("tr");
      tr.dataset.path = a.path;
      tr.className = a.state + (a.shelved_until || a.suppressed ? " shelved" : "");
      const p = cell(tr, "");
      const badge = document.createElement("span");
      badge.className = "prio prio-" + a.priority;
      badge.textContent = a.priority;
      p.appendChild(badge);
      const name = cell(tr, a.device.split("/").slice(1).join("/") + " · " + a.name);
      name.title = a.path + (a.message ? "\n" + a.message : "");
      cell(tr, a.state.replace("_", " ") + (a.shelved_until ? " (shelved)" : "") + (a.suppressed ? " (suppressed)" : ""), "state");
      cell(tr, a.text || fmt(a.value) + " / " + fmt(a.limit));
      cell(tr, a.since ? new Date(a.since).toLocaleTimeString() : "—");
      const actions = cell(tr, "");
      if (a.state === "active_unacked" || a.state === "cleared_unacked") {
        button(actions, "Ack", () => api("POST", "/api/v1/alarms/ack", { path: a.path, comment: "" }));
      }
      if (a.shelved_until) {
        button(actions, "Unshelve", () => api("POST", "/api/v1/alarms/shelve", { path: a.path, minutes: 0, comment: "" }));
      } else {
        button(actions, "Shelve 1 h", () => {
          const why = window.prompt("Why shelve " + a.name + " for an hour?");
          if (!why) return Promise.resolve();
          return api("POST", "/api/v1/alarms/shelve", { path: a.path, minutes: 60, comment: why });
        });
      }
      body.appendChild(tr);
    }
    note.textContent = j.count ? "" : "No alarm needs attention.";
  }

  // The last day's alarm system performance (ISA-18.2), in a line.
  const statsEl = document.getElementById("alarm-stats");
  function short(path) {
    const [device, name] = path.split("/_alarms/");
    return device.split("/").slice(1).join("/") + " · " + name;
  }
  async function loadStats() {
    let j;
    try { j = await api("GET", "/api/v1/alarms/statistics"); } catch (e) { statsEl.textContent = e.message; return; }
    if (!j) return;
    const pct = (x) => (100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0) + " %";
    let s = "Last 24 h: " + j.raised + " alarm" + (j.raised === 1 ? "" : "s") + " raised, " +
      j.per_window.average.toFixed(j.per_window.average < 1 ? 2 : 1) + " per 10 min on average, at most " + j.per_window.max +
      "; in flood (more than " + j.flood_above + " per 10 min) " + pct(j.flood_share) + " of the time";
    if (j.most_frequent.length) {
      s += "; most frequent: " + j.most_frequent.slice(0, 3).map((c) => short(c.alarm) + " ×" + c.count).join(", ");
    }
    if (j.chattering.length) s += "; chattering: " + j.chattering.map((c) => short(c.alarm)).join(", ");
    if (j.stale.length) s += "; standing over 24 h: " + j.stale.length;
    statsEl.textContent = s + ".";
  }

  // Transitions come on the live feed (app.js passes them on); reload the
  // list at most twice a second.
  let pending = 0;
  document.addEventListener("calx-alarms", () => {
    if (!pending) pending = setTimeout(() => { pending = 0; loadAlarms(); loadStats(); }, 500);
  });
  loadAlarms();
  loadStats();
  setInterval(loadAlarms, 30000);
  setInterval(loadStats, 60000);

  // Cycles: machines and aggregates are those whose last-cycle tags are in the tree.
  const machineSel = document.getElementById("cycle-machine");
  const aggSel = document.getElementById("cycle-agg");
  const chartEl = document.getElementById("cycles-chart");
  const cyclesNote = document.getElementById("cycles-note");
  const found = new Map(); // "machine|cycle" -> Set of aggregates
  document.querySelectorAll("tr.tag").forEach((tr) => {
    const m = tr.dataset.path.match(/^(.*)\/_cycles\/([^/]+)\/([^/]+)$/);
    if (!m) return;
    const key = m[1] + "|" + m[2];
    if (!found.has(key)) found.set(key, new Set());
    found.get(key).add(m[3]);
  });
  let plot = null;
  for (const key of found.keys()) {
    const [machine, name] = key.split("|");
    const o = document.createElement("option");
    o.value = key;
    o.textContent = machine.split("/").slice(1).join("/") + " · " + name;
    machineSel.appendChild(o);
  }
  function fillAggs() {
    aggSel.textContent = "";
    const aggs = found.get(machineSel.value);
    if (!aggs) return;
    for (const a of [...aggs].sort()) {
      const o = document.createElement("option");
      o.value = o.textContent = a;
      if (a === "energy_kwh") o.selected = true;
      aggSel.appendChild(o);
    }
  }
  async function loadCycles() {
    if (!machineSel.value) { cyclesNote.textContent = "No machine with cycles in the namespace."; return; }
    const [machine, name] = machineSel.value.split("|");
    const agg = aggSel.value;
    const from = new Date(Date.now() - 8 * 3600 * 1000).toISOString();
    let j;
    try {
      j = await api("GET", "/api/v1/cycles?machine=" + encodeURIComponent(machine) + "&name=" + encodeURIComponent(name) + "&from=" + from);
    } catch (e) { cyclesNote.textContent = e.message; return; }
    if (!j) return;
    const xs = [], ys = [];
    for (const c of j.cycles) {
      if (c.machine !== machine) continue;
      xs.push(Date.parse(c.end) / 1000);
      ys.push(c.values[agg] ?? null);
    }
    cyclesNote.textContent = xs.length + " cycles in the last 8 h" + (xs.length ? ", the last " + fmt(ys[ys.length - 1]) + " " + agg : "");
    if (typeof uPlot === "undefined") return;
    if (plot) plot.destroy();
    const width = Math.max(300, chartEl.clientWidth || 600);
    plot = new uPlot({
      width, height: 200,
      series: [{}, { label: agg + " per cycle", stroke: "#1e8449", fill: "#1e844955", paths: uPlot.paths.bars({ size: [0.8, 40] }), points: { show: false } }],
      axes: [{}, { size: 60 }],
      scales: { x: { time: true } },
    }, [xs, ys], chartEl);
  }
  machineSel.addEventListener("change", () => { fillAggs(); loadCycles(); });
  aggSel.addEventListener("change", loadCycles);
  fillAggs();
  loadCycles();
  setInterval(loadCycles, 60000);
})();
