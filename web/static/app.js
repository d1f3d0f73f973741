// The namespace view: live values over Server-Sent Events, and a trend of
// the selected tag drawn from the history API with uPlot.
(function () {
  "use strict";
  const rows = new Map();
  document.querySelectorAll("tr.tag").forEach((tr) => rows.set(tr.dataset.path, tr));
  // Times are rendered in the browser's own time zone.
  document.querySelectorAll("td.ts[data-ts]").forEach((td) => { td.textContent = new Date(td.dataset.ts).toLocaleTimeString(); });
  const conn = document.getElementById("conn");
  const title = document.getElementById("chart-title");
  const note = document.getElementById("chart-note");
  const chartEl = document.getElementById("chart");
  let selected = null;
  let rangeSec = 3600;
  let plot = null;
  let series = [[], []];

  function fmtValue(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 10 ? 2 : 1);
    return String(v);
  }
  function fmtTime(ts) {
    return new Date(ts).toLocaleTimeString();
  }
  function numeric(v) {
    if (typeof v === "number") return v;
    if (typeof v === "boolean") return v ? 1 : 0;
    return null;
  }

  // Live values. Updates are gathered per tag and applied once per frame,
  // so a fast stream costs one DOM write per tag and frame, not per value.
  let unknownSeen = false;
  const pendingRows = new Map();
  let frame = 0;
  function applyPending() {
    frame = 0;
    for (const [path, s] of pendingRows) {
      const tr = rows.get(path);
      const cell = tr.querySelector(".value");
      cell.textContent = fmtValue(s.value);
      const q = tr.querySelector(".quality");
      q.textContent = s.quality;
      q.className = "quality q-" + s.quality;
      tr.querySelector(".ts").textContent = fmtTime(s.ts);
      if (cell.animate) cell.animate([{ background: "#fff6c2" }, { background: "transparent" }], 800);
    }
    pendingRows.clear();
  }
  function connect() {
    const es = new EventSource("/api/v1/live");
    es.onopen = () => { conn.textContent = "live"; conn.className = "live"; };
    es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "muted"; };
    es.addEventListener("values", (ev) => {
      const batch = JSON.parse(ev.data);
      for (const s of batch) {
        if (!rows.has(s.path)) { unknownSeen = true; continue; }
        if (s.historical) continue;
        pendingRows.set(s.path, s);
        if (s.path === selected) appendPoint(s);
      }
      if (pendingRows.size && !frame) frame = requestAnimationFrame(applyPending);
    });
    es.addEventListener("alarms", (ev) => {
      document.dispatchEvent(new CustomEvent("calx-alarms", { detail: JSON.parse(ev.data) }));
    });
  }
  connect();
  // New tags appear when an edge is born: reload the tree then, at most every 5 s.
  setInterval(() => { if (unknownSeen) window.location.reload(); }, 5000);

  // Trend.
  function appendPoint(s) {
    const y = numeric(s.value);
    if (y === null || !plot) return;
    series[0].push(Date.parse(s.ts) / 1000);
    series[1].push(y);
    const cut = Date.now() / 1000 - rangeSec;
    while (series[0].length && series[0][0] < cut) { series[0].shift(); series[1].shift(); }
    if (!chartFrame) chartFrame = requestAnimationFrame(() => { chartFrame = 0; if (plot) plot.setData(series); });
  }
  let chartFrame = 0;

  async function loadTrend() {
    if (!selected) return;
    const tr = rows.get(selected);
    const unit = tr ? tr.dataset.unit : "";
    title.textContent = selected + (unit ? " [" + unit + "]" : "");
    const to = new Date();
    const from = new Date(to.getTime() - rangeSec * 1000);
    const url = "/api/v1/history?path=" + encodeURIComponent(selected) +
      "&from=" + from.toISOString() + "&to=" + to.toISOString();
    const res = await fetch(url, { credentials: "same-origin" });
    if (res.status === 401) { window.location.assign("/login"); return; }
    const j = await res.json();
    if (!res.ok) { note.textContent = j.error || "history failed"; return; }
    const xs = [], ys = [];
    for (const p of j.points) {
      const y = numeric(p.value);
      if (y === null && p.value !== null) continue;
      xs.push(Date.parse(p.ts) / 1000);
      ys.push(y);
    }
    series = [xs, ys];
    note.textContent = j.count + " points" + (j.truncated ? " (truncated)" : "");
    if (typeof uPlot === "undefined") {
      note.textContent += " — chart library missing: build with `make` to install it";
      return;
    }
    if (plot) plot.destroy();
    const width = Math.max(300, chartEl.clientWidth || 600);
    plot = new uPlot({
      width, height: 320,
      series: [{}, { label: selected.split("/").pop(), stroke: "#1f6feb", width: 1.5, spanGaps: false }],
      axes: [{}, { size: 70 }],
      scales: { x: { time: true } },
    }, series, chartEl);
  }

  rows.forEach((tr, path) => {
    const pick = () => {
      document.querySelectorAll("tr.tag.selected").forEach((x) => x.classList.remove("selected"));
      tr.classList.add("selected");
      selected = path;
      loadTrend();
    };
    tr.addEventListener("click", pick);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") pick(); });
  });
  document.querySelectorAll(".range button").forEach((b) => {
    b.addEventListener("click", () => {
      document.querySelectorAll(".range button").forEach((x) => x.classList.remove("active"));
      b.classList.add("active");
      rangeSec = Number(b.dataset.range);
      loadTrend();
    });
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin" });
    window.location.assign("/login");
  });
  if (rows.size === 0) setTimeout(() => window.location.reload(), 2000);
})();
