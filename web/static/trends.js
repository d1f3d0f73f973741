// Trends: several tags on one time axis (a y axis per unit), ranges from
// 15 minutes to a year drawn from the historian's downsampled points, zoom
// by dragging, live mode, the previous period for comparison, and exports
// of what is shown. The URL holds tags and range, so a trend can be shared.
(function () {
  "use strict";
  const { get, el } = Calx;
  const chartEl = document.getElementById("chart");
  const note = document.getElementById("note");
  const chips = document.getElementById("chips");
  const liveBox = document.getElementById("live");
  const compareBox = document.getElementById("compare");
  const colors = ["#1f6feb", "#e8590c", "#2f9e44", "#ae3ec9", "#0c8599", "#c92a2a", "#5c940d", "#862e9c"];
  const POINTS = 1200; // per series, about a point per pixel column

  const p = Calx.params();
  let tags = p.getAll("tag");
  let rangeSec = Number(p.get("range")) || 3600;
  let from = p.get("from") ? Date.parse(p.get("from")) : null; // a zoomed window
  let to = p.get("to") ? Date.parse(p.get("to")) : null;
  liveBox.checked = p.get("live") === "1";
  const bandsBox = document.getElementById("bands");
  bandsBox.checked = p.get("bands") === "1";
  compareBox.checked = p.get("compare") === "1";
  const meta = new Map(); // path -> tag (unit, datatype)
  let raw = []; // per series: [xs, ys], the compared ones after the tags
  let bands = []; // per tag: [xs, mins, maxs] of the historian's buckets
  let plot = null;

  function save() {
    const q = new URLSearchParams();
    for (const t of tags) q.append("tag", t);
    if (from !== null) { q.set("from", new Date(from).toISOString()); q.set("to", new Date(to).toISOString()); } else q.set("range", rangeSec);
    if (liveBox.checked) q.set("live", "1");
    if (compareBox.checked) q.set("compare", "1");
    if (bandsBox.checked) q.set("bands", "1");
    Calx.setParams(q);
  }
  function window_() {
    if (from !== null) return [from, to];
    const now = Date.now();
    return [now - rangeSec * 1000, now];
  }
  function numeric(v) {
    if (typeof v === "number") return v;
    if (typeof v === "boolean") return v ? 1 : 0;
    return null;
  }

  // label names a tag by what sets it apart from the others on the chart.
  function label(t) {
    if (tags.length < 2) return t.split("/").slice(-2).join("/");
    const segs = tags.map((x) => x.split("/"));
    let same = 0;
    while (segs.every((s) => s.length > same + 1 && s[same] === segs[0][same])) same++;
    const rest = t.split("/").slice(same);
    const last = rest[rest.length - 1];
    const lastSame = segs.every((s) => s[s.length - 1] === last);
    return lastSame ? rest.slice(0, -1).join("/") + " · " + last : rest.join("/");
  }

  function drawChips() {
    chips.textContent = "";
    tags.forEach((t, i) => {
      const m = meta.get(t);
      chips.append(el("span", { class: "chip" },
        el("span", { class: "swatch c" + (i % colors.length), text: "■", "aria-hidden": "true" }),
        el("a", { href: "/uns?q=" + encodeURIComponent(t), text: label(t) + (m && m.unit ? " [" + m.unit + "]" : ""), title: t }),
        el("button", { type: "button", "aria-label": "Remove " + t, text: "×", onclick: () => { tags.splice(i, 1); save(); load(); } })));
    });
    document.querySelectorAll("#ranges button").forEach((b) => b.classList.toggle("active", from === null && Number(b.dataset.range) === rangeSec));
    const [a, b] = window_();
    const q = tags.map((t) => "path=" + encodeURIComponent(t)).join("&") + "&from=" + new Date(a).toISOString() + "&to=" + new Date(b).toISOString();
    document.getElementById("csv").href = "/api/v1/history?" + q + "&format=csv";
    document.getElementById("parquet").href = "/api/v1/history?" + q + "&format=parquet";
  }

  async function fetchSeries(a, b) {
    const q = tags.map((t) => "path=" + encodeURIComponent(t)).join("&");
    const j = await get("/api/v1/history?" + q + "&from=" + new Date(a).toISOString() + "&to=" + new Date(b).toISOString() + "&points=" + POINTS);
    return j.series.map((s) => {
      const xs = [], ys = [];
      for (const pt of s.points) {
        const y = numeric(pt.value);
        if (y === null && pt.value !== null) continue;
        xs.push(Date.parse(pt.ts) / 1000);
        ys.push(y);
      }
      return [xs, ys];
    });
  }

  // The lowest and highest value of each of 300 buckets, per tag: the band
  // a downsampled line lies in.
  async function fetchBands(a, b) {
    const q = tags.map((t) => "path=" + encodeURIComponent(t)).join("&") + "&from=" + new Date(a).toISOString() + "&to=" + new Date(b).toISOString() +
      "&interval=" + Math.max(1, Math.round((b - a) / 300 / 1000)) + "s";
    const [lo, hi] = await Promise.all([get("/api/v1/history?" + q + "&agg=min"), get("/api/v1/history?" + q + "&agg=max")]);
    return tags.map((_, k) => [lo.buckets.map((x) => Date.parse(x.ts) / 1000), lo.buckets.map((x) => x.values[k]), hi.buckets.map((x) => x.values[k])]);
  }

  async function load() {
    drawChips();
    if (!tags.length) {
      if (plot) { plot.destroy(); plot = null; }
      note.textContent = "Add tags to draw them; or open one from the namespace.";
      return;
    }
    for (const t of tags) {
      if (meta.has(t)) continue;
      try {
        const j = await get("/api/v1/namespace?prefix=" + encodeURIComponent(t));
        const m = j.tags.find((x) => x.path === t);
        if (m) meta.set(t, m);
      } catch (e) { /* the history answers the error */ }
    }
    drawChips();
    const [a, b] = window_();
    const began = performance.now();
    try {
      raw = await fetchSeries(a, b);
      if (compareBox.checked) {
        const span = b - a;
        const prev = await fetchSeries(a - span, b - span);
        raw = raw.concat(prev.map(([xs, ys]) => [xs.map((x) => x + span / 1000), ys]));
      }
      bands = [];
      if (bandsBox.checked) {
        try { bands = await fetchBands(a, b); } catch (e) { note.textContent = "min/max: " + e.message; }
      }
    } catch (e) { note.textContent = e.message; return; }
    draw();
    const n = raw.slice(0, tags.length).reduce((s, r) => s + r[0].length, 0);
    note.textContent = n + " points in " + Math.round(performance.now() - began) + " ms. Drag across the chart to zoom in; double-click to zoom out.";
    document.body.dataset.drawnMs = String(Math.round(performance.now())); // since the page began to load
  }

  function draw() {
    if (typeof uPlot === "undefined") { note.textContent = "The chart library is missing: build with make."; return; }
    const tables = raw.map(([xs, ys]) => [xs, ys]);
    for (const [xs, mins, maxs] of bands) { tables.push([xs, mins]); tables.push([xs, maxs]); }
    const data = uPlot.join(tables);
    const units = [];
    const series = [{}];
    raw.forEach((_, i) => {
      const k = i % tags.length;
      const t = tags[k];
      const unit = (meta.get(t) || {}).unit || "";
      if (!units.includes(unit)) units.push(unit);
      const prev = i >= tags.length;
      series.push({
        label: label(t) + (prev ? " (previous)" : ""), scale: unit || "_", stroke: colors[k % colors.length],
        width: prev ? 1 : 1.5, dash: prev ? [5, 4] : undefined, spanGaps: false, points: { show: false },
      });
    });
    const uBands = [];
    bands.forEach((_, k) => {
      const t = tags[k];
      const scale = (meta.get(t) || {}).unit || "_";
      const lo = series.length, hi = series.length + 1;
      const style = { scale, stroke: "transparent", points: { show: false }, spanGaps: true, width: 0 };
      series.push(Object.assign({ label: label(t) + " min" }, style), Object.assign({ label: label(t) + " max" }, style));
      uBands.push({ series: [hi, lo], fill: colors[k % colors.length] + "33" });
    });
    const axes = [{ stroke: getComputedStyle(document.body).color, grid: { stroke: "rgba(128,128,128,.15)" } }];
    units.slice(0, 2).forEach((u, i) => axes.push({ scale: u || "_", label: u, side: i ? 1 : 3, size: 64,
      stroke: getComputedStyle(document.body).color, grid: { show: i === 0, stroke: "rgba(128,128,128,.15)" } }));
    const width = Math.max(280, chartEl.clientWidth || 600);
    const height = Math.max(240, Math.min(480, Math.round(window.innerHeight * 0.55)));
    if (plot) plot.destroy();
    plot = new uPlot({
      width, height, series, axes, bands: uBands,
      // The x axis spans the window asked for, not just where data is.
      scales: { x: { time: true, range: () => { const [a, b] = window_(); return [a / 1000, b / 1000]; } } },
      cursor: { drag: { x: true, y: false } },
      hooks: { setSelect: [(u) => {
        if (u.select.width < 5) return;
        from = u.posToVal(u.select.left, "x") * 1000;
        to = u.posToVal(u.select.left + u.select.width, "x") * 1000;
        liveBox.checked = false;
        save();
        load();
      }] },
    }, data, chartEl);
    // The bands' edges need no line of their own in the legend.
    plot.root.querySelectorAll(".u-legend .u-series").forEach((row, i) => { if (i > raw.length) row.hidden = true; });
    chartEl.addEventListener("dblclick", zoomOut, { once: true });
  }
  function zoomOut() {
    if (from === null) return;
    from = to = null;
    save();
    load();
  }

  // Live: values of the tags come from the live feed and the window moves on.
  let close = null;
  let frame = 0;
  function relive() {
    if (close) { close(); close = null; Calx.setConn(""); }
    if (!liveBox.checked || !tags.length) return;
    from = to = null;
    close = Calx.live(tags, {
      onValues(batch) {
        for (const s of batch) {
          const k = tags.indexOf(s.path);
          const y = numeric(s.value);
          if (k < 0 || s.historical || (y === null && s.value !== null)) continue;
          raw[k][0].push(Date.parse(s.ts) / 1000);
          raw[k][1].push(y);
        }
        if (!frame) frame = requestAnimationFrame(() => {
          frame = 0;
          const cut = Date.now() / 1000 - rangeSec;
          for (const r of raw.slice(0, tags.length)) while (r[0].length && r[0][0] < cut) { r[0].shift(); r[1].shift(); }
          if (plot) plot.setData(uPlot.join(raw.map(([xs, ys]) => [xs, ys])));
        });
      },
      onResume: load,
    });
  }

  document.querySelectorAll("#ranges button").forEach((b) => b.addEventListener("click", () => {
    rangeSec = Number(b.dataset.range);
    from = to = null;
    save();
    load().then(relive);
  }));
  liveBox.addEventListener("change", () => { save(); load().then(relive); });
  bandsBox.addEventListener("change", () => { save(); load(); });
  // Move and zoom with buttons: the same on a touch screen as with a mouse.
  document.querySelectorAll("#pan button").forEach((btn) => btn.addEventListener("click", () => {
    const [a, b] = window_();
    const span = b - a;
    if (btn.dataset.pan) {
      const d = Number(btn.dataset.pan) * span;
      from = a + d;
      to = Math.min(b + d, Date.now());
      from = to - span;
    } else {
      const mid = (a + b) / 2, half = (span * Number(btn.dataset.zoom)) / 2;
      from = mid - half;
      to = Math.min(mid + half, Date.now());
    }
    liveBox.checked = false;
    relive();
    save();
    load();
  }));
  compareBox.addEventListener("change", () => { save(); load(); });

  // Add a tag: suggestions from the server's search as one types.
  const addQ = document.getElementById("add-q");
  const list = document.getElementById("add-list");
  let timer = 0;
  addQ.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const w = addQ.value.trim();
      if (w.length < 2) return;
      try {
        const j = await get("/api/v1/namespace/search?limit=20&q=" + encodeURIComponent(w));
        list.textContent = "";
        for (const t of j.tags) list.append(el("option", { value: t.path }));
      } catch (e) { note.textContent = e.message; }
    }, 150);
  });
  document.getElementById("add").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = addQ.value.trim();
    if (!t || tags.includes(t)) return;
    tags.push(t);
    addQ.value = "";
    save();
    load().then(relive);
  });
  let resize = 0;
  window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(() => plot && plot.setSize({ width: Math.max(280, chartEl.clientWidth), height: plot.height }), 200); });

  save();
  load().then(relive);
})();
