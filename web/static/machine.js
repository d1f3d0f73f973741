// A machine's dashboard, made from its template without configuration:
// its state, its tags as tiles with live values and the last hour as a
// sparkline, its active alarms and its last cycles. Engineers choose the
// tiles and the site card's KPIs for every machine of the template.
(function () {
  "use strict";
  const { get, api, el, fmtValue, fmtDateTime, alarmName } = Calx;
  const path = decodeURIComponent(window.location.pathname.replace(/^\/machines\//, "")).replace(/\/$/, "");
  const tilesEl = document.getElementById("tiles");
  const stateEl = document.getElementById("state");
  const STALE_MS = 5 * 60 * 1000;
  const STATE_NAMES = ["state", "status", "mode", "running"];
  const tiles = new Map(); // path -> {tag, value, canvas, xs, ys}
  let template = "";

  async function start() {
    document.getElementById("name").textContent = path.split("/").pop();
    document.title = path.split("/").pop() + " · Calx";
    let kids, inst, boards;
    try {
      [kids, inst, boards] = await Promise.all([get("/api/v1/namespace/children?prefix=" + encodeURIComponent(path)),
        get("/api/v1/instances").catch(() => ({ instances: [] })), get("/api/v1/dashboards").catch(() => ({ dashboards: [] }))]);
    } catch (e) { document.getElementById("sub").textContent = e.message; return; }
    const me = (inst.instances || []).find((d) => d.Path === path);
    template = me ? me.Template : "";
    document.getElementById("sub").textContent = path + (template ? " · template " + template : "") + (me ? " · edge " + me.edge : "");
    const tags = kids.children.filter((n) => n.tag).map((n) => n.tag);
    if (!tags.length) { document.getElementById("sub").textContent = "No tags under " + path + "."; return; }
    const layout = (boards.dashboards || []).find((d) => d.template === template);
    const byName = new Map(tags.map((t) => [t.path.slice(path.length + 1), t]));
    let chosen = layout && layout.tiles && layout.tiles.length ? layout.tiles.map((n) => byName.get(n)).filter(Boolean) : tags;
    const state = STATE_NAMES.map((n) => byName.get(n)).find(Boolean);
    if (state) { paintState(state); chosen = chosen.filter((t) => t !== state || (layout && layout.tiles && layout.tiles.includes("state"))); }
    for (const t of chosen) addTile(t);
    sparklines(chosen);
    Calx.live([path], { onValues, onResume: refresh });
    if (["admin", "engineer"].includes(document.body.dataset.role) && template) editor(layout, tags);
    loadAlarms();
    loadEvents();
    loadCycles();
  }

  function paintState(t) {
    const v = t.ts ? String(t.value) : "unknown";
    stateEl.textContent = t.path.split("/").pop() + ": " + v;
    stateEl.className = "state-badge st-" + v.toLowerCase().replace(/[^a-z]/g, "");
    stateEl.dataset.path = t.path;
  }

  function addTile(t) {
    const value = el("span", { class: "value" });
    const canvas = el("canvas", { width: "200", height: "36", "aria-hidden": "true" });
    const tile = el("a", { class: "tile", href: "/trends?tag=" + encodeURIComponent(t.path), "data-path": t.path, title: t.description || t.path },
      el("span", { class: "label", text: t.path.split("/").pop() }), el("span", {}, value, " ", el("span", { class: "unit", text: t.unit || "" })), canvas);
    tilesEl.append(tile);
    const item = { tag: t, value, canvas, tile, xs: [], ys: [] };
    tiles.set(t.path, item);
    paint(item);
  }
  function paint(item) {
    const t = item.tag;
    item.value.textContent = t.ts ? fmtValue(t.value) : "—";
    const stale = t.ts && Date.now() - Date.parse(t.ts) > STALE_MS;
    item.tile.classList.toggle("stale", !!stale);
    item.tile.classList.toggle("bad", t.quality === "bad" && !!t.ts);
    item.value.title = t.ts ? t.quality + " at " + new Date(t.ts).toLocaleString() : "no value yet";
  }

  // The last hour of each numeric tile, a point a minute.
  async function sparklines(tags) {
    const numeric = tags.filter((t) => ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"].includes(t.datatype));
    const now = Date.now();
    for (let i = 0; i < numeric.length; i += 20) {
      const part = numeric.slice(i, i + 20);
      let j;
      try {
        j = await get("/api/v1/history?" + part.map((t) => "path=" + encodeURIComponent(t.path)).join("&") + "&from=" + new Date(now - 3600e3).toISOString() +
          "&to=" + new Date(now).toISOString() + "&points=60");
      } catch (e) { continue; }
      for (const s of j.series) {
        const item = tiles.get(s.path);
        if (!item) continue;
        item.xs = s.points.map((p) => Date.parse(p.ts));
        item.ys = s.points.map((p) => (typeof p.value === "number" ? p.value : null));
        draw(item);
      }
    }
  }
  function draw(item) {
    const c = item.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth || 200, h = c.clientHeight || 36;
    c.width = w * ratio;
    c.height = h * ratio;
    const g = c.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, w, h);
    const pts = item.xs.map((x, i) => [x, item.ys[i]]).filter((p) => p[1] !== null);
    if (pts.length < 2) return;
    const x0 = Date.now() - 3600e3, x1 = Date.now();
    let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
    if (hi === lo) { hi += 1; lo -= 1; }
    g.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#1f6feb";
    g.lineWidth = 1.5;
    g.beginPath();
    pts.forEach(([x, y], i) => {
      const px = ((x - x0) / (x1 - x0)) * w, py = h - 2 - ((y - lo) / (hi - lo)) * (h - 4);
      if (i) g.lineTo(px, py); else g.moveTo(px, py);
    });
    g.stroke();
  }

  let frame = 0;
  const pending = new Map();
  function onValues(batch) {
    for (const s of batch) if (!s.historical) pending.set(s.path, s);
    if (pending.size && !frame) frame = requestAnimationFrame(apply);
  }
  function apply() {
    frame = 0;
    for (const [p, s] of pending) {
      if (stateEl.dataset.path === p) paintState({ path: p, value: s.value, ts: s.ts });
      const item = tiles.get(p);
      if (!item) continue;
      Object.assign(item.tag, { value: s.value, ts: s.ts, quality: s.quality });
      paint(item);
      if (typeof s.value === "number") {
        const last = item.xs[item.xs.length - 1] || 0;
        const t = Date.parse(s.ts);
        if (t - last >= 60e3) { item.xs.push(t); item.ys.push(s.value); } else if (item.ys.length) { item.ys[item.ys.length - 1] = s.value; }
        while (item.xs.length && item.xs[0] < Date.now() - 3600e3) { item.xs.shift(); item.ys.shift(); }
        draw(item);
      }
    }
    pending.clear();
  }
  async function refresh() {
    try {
      const j = await get("/api/v1/latest?prefix=" + encodeURIComponent(path));
      for (const t of j.tags) {
        const item = tiles.get(t.path);
        if (item) { Object.assign(item.tag, t); paint(item); }
      }
    } catch (e) { /* the header shows the connection */ }
  }
  setInterval(() => tiles.forEach(paint), 30000);

  async function loadAlarms() {
    const note = document.getElementById("alarms-note");
    let j;
    try { j = await get("/api/v1/alarms?active=true&device=" + encodeURIComponent(path)); } catch (e) { note.textContent = e.message; return; }
    const body = document.querySelector("#alarms tbody");
    body.textContent = "";
    for (const a of j.alarms) {
      body.append(el("tr", { class: a.state }, el("td", {}, el("span", { class: "prio prio-" + a.priority, text: a.priority })),
        el("td", { text: alarmName(a).split(" · ").pop() }), el("td", { class: "state", text: a.state.replace("_", " ") }), el("td", { text: fmtDateTime(a.since) })));
    }
    note.textContent = j.count ? "" : "None. ";
    note.append(el("a", { href: "/alarms", text: "All alarms" }));
  }
  document.addEventListener("calx-alarms", () => setTimeout(() => { loadAlarms(); loadEvents(); }, 300));

  // What happened: the alarm journal of the machine over the last 8 hours.
  async function loadEvents() {
    const note = document.getElementById("events-note");
    let j;
    try {
      j = await get("/api/v1/alarms/journal?limit=200&alarm=" + encodeURIComponent(path) + "&from=" + new Date(Date.now() - 8 * 3600e3).toISOString());
    } catch (e) { note.textContent = e.message; return; }
    const body = document.querySelector("#events tbody");
    body.textContent = "";
    for (const t of j.transitions.slice().reverse()) {
      body.append(el("tr", {}, el("td", { text: fmtDateTime(t.ts) }), el("td", { text: t.alarm.split("/_alarms/").pop() }),
        el("td", { text: t.event }), el("td", { class: "wide-only", text: [t.user, t.comment].filter(Boolean).join(": ") })));
    }
    note.textContent = j.count ? j.count + " alarm events" : "No alarm event in the last 8 hours.";
  }

  async function loadCycles() {
    const note = document.getElementById("cycles-note");
    let j;
    try { j = await get("/api/v1/cycles?machine=" + encodeURIComponent(path) + "&from=" + new Date(Date.now() - 24 * 3600e3).toISOString()); } catch (e) { note.textContent = e.message; return; }
    const cycles = j.cycles.filter((c) => c.machine === path).slice(-5).reverse();
    const aggs = [...new Set(cycles.flatMap((c) => Object.keys(c.values)))].sort();
    const head = document.querySelector("#cycles thead");
    const body = document.querySelector("#cycles tbody");
    head.textContent = body.textContent = "";
    note.textContent = "";
    if (!cycles.length) { note.textContent = "No cycle in the last 24 h."; return; }
    head.append(el("tr", {}, el("th", { text: "End" }), ...aggs.map((a) => el("th", { class: "num", text: a }))));
    for (const c of cycles) body.append(el("tr", {}, el("td", { text: fmtDateTime(c.end) }), ...aggs.map((a) => el("td", { class: "num", text: fmtValue(c.values[a]) }))));
    note.append(el("a", { href: "/cycles?machine=" + encodeURIComponent(path + "|" + cycles[0].name), text: "All cycles" }));
  }

  function editor(layout, tags) {
    const box = document.getElementById("layout");
    box.hidden = false;
    const names = tags.map((t) => t.path.slice(path.length + 1));
    document.getElementById("kpis").value = (layout ? layout.kpis : names.filter((n) => STATE_NAMES.includes(n)).slice(0, 1)).join(", ");
    document.getElementById("tiles-in").value = (layout ? layout.tiles : []).join(", ");
    document.getElementById("layout-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const list = (id) => document.getElementById(id).value.split(",").map((x) => x.trim()).filter(Boolean);
      const note = document.getElementById("layout-note");
      note.textContent = "";
      try {
        await api("PUT", "/api/v1/dashboards/" + encodeURIComponent(template), { kpis: list("kpis"), tiles: list("tiles-in") });
        window.location.reload();
      } catch (err) { note.textContent = err.message; }
    });
  }

  start();
})();
