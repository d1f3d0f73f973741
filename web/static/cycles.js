// Cycles: a machine's cycles with their aggregates (energy per burn, mean
// temperature, ...), as a bar chart of one aggregate and as a table. The
// URL keeps machine, aggregate and period.
(function () {
  "use strict";
  const { get, el, fmtValue, fmtDateTime } = Calx;
  const machineSel = document.getElementById("machine");
  const aggSel = document.getElementById("agg");
  const hoursSel = document.getElementById("hours");
  const chartEl = document.getElementById("chart");
  const note = document.getElementById("note");
  const thead = document.querySelector("#cycles thead");
  const tbody = document.querySelector("#cycles tbody");
  const found = new Map(); // "machine|cycle" -> Set of aggregates
  let plot = null;

  async function machines() {
    // Each machine with cycles has a tag per aggregate: <machine>/_cycles/<cycle>/<aggregate>.
    const j = await get("/api/v1/namespace/search?limit=1000&q=" + encodeURIComponent("/_cycles/"));
    for (const t of j.tags) {
      const m = t.path.match(/^(.*)\/_cycles\/([^/]+)\/([^/]+)$/);
      if (!m) continue;
      const key = m[1] + "|" + m[2];
      if (!found.has(key)) found.set(key, new Set());
      found.get(key).add(m[3]);
    }
    const p = Calx.params();
    for (const key of [...found.keys()].sort()) {
      const [machine, name] = key.split("|");
      machineSel.append(el("option", { value: key, text: machine.split("/").slice(1).join("/") + " · " + name, selected: key === p.get("machine") }));
    }
    if (p.get("hours")) hoursSel.value = p.get("hours");
  }
  function fillAggs() {
    aggSel.textContent = "";
    const want = Calx.params().get("agg") || "energy_kwh";
    for (const a of [...(found.get(machineSel.value) || [])].sort()) aggSel.append(el("option", { value: a, text: a, selected: a === want }));
  }

  async function load() {
    const q = new URLSearchParams({ machine: machineSel.value, agg: aggSel.value, hours: hoursSel.value });
    Calx.setParams(q);
    if (!machineSel.value) { note.textContent = "No machine has cycles yet: a template's cycles: section defines them."; return; }
    const [machine, name] = machineSel.value.split("|");
    const agg = aggSel.value;
    const from = new Date(Date.now() - Number(hoursSel.value) * 3600e3).toISOString();
    let j;
    try { j = await get("/api/v1/cycles?machine=" + encodeURIComponent(machine) + "&name=" + encodeURIComponent(name) + "&from=" + from); } catch (e) { note.textContent = e.message; return; }
    const cycles = j.cycles.filter((c) => c.machine === machine);
    const aggs = [...(found.get(machineSel.value) || [])].sort();
    thead.textContent = "";
    thead.append(el("tr", {}, el("th", { text: "End" }), el("th", { class: "num", text: "Minutes" }), ...aggs.map((a) => el("th", { class: "num", text: a }))));
    tbody.textContent = "";
    for (const c of cycles.slice().reverse()) {
      tbody.append(el("tr", {}, el("td", { text: fmtDateTime(c.end) }),
        el("td", { class: "num", text: fmtValue((Date.parse(c.end) - Date.parse(c.start)) / 60000) }),
        ...aggs.map((a) => el("td", { class: "num", text: fmtValue(c.values[a]) }))));
    }
    const xs = cycles.map((c) => Date.parse(c.end) / 1000);
    const ys = cycles.map((c) => (c.values[agg] === undefined ? null : c.values[agg]));
    const sum = ys.reduce((s, y) => s + (y || 0), 0);
    note.textContent = cycles.length + " cycles" + (cycles.length ? "; " + agg + ": last " + fmtValue(ys[ys.length - 1]) + ", total " + fmtValue(sum) + ", mean " + fmtValue(sum / cycles.length) : "");
    if (plot) { plot.destroy(); plot = null; }
    if (typeof uPlot === "undefined" || !cycles.length) return;
    plot = new uPlot({
      width: Math.max(280, chartEl.clientWidth || 600), height: 240,
      series: [{}, { label: agg + " per cycle", stroke: "#1e8449", fill: "rgba(30,132,73,.35)", paths: uPlot.paths.bars({ size: [0.8, 40] }), points: { show: false } }],
      axes: [{ stroke: getComputedStyle(document.body).color }, { size: 64, stroke: getComputedStyle(document.body).color }],
      scales: { x: { time: true, range: () => [Date.now() / 1000 - Number(hoursSel.value) * 3600, Date.now() / 1000] } },
    }, [xs, ys], chartEl);
  }
  // Every machine with the same cycle and aggregate, over this period and
  // the one before (this week against last week, with 7 d).
  async function loadAll() {
    const agg = aggSel.value;
    document.getElementById("all-agg").textContent = agg;
    const hours = Number(hoursSel.value);
    const now = Date.now();
    const body = document.querySelector("#all tbody");
    const rows = [];
    for (const key of [...found.keys()].sort().slice(0, 50)) {
      if (!found.get(key).has(agg)) continue;
      const [machine, name] = key.split("|");
      let j;
      try {
        j = await get("/api/v1/cycles?machine=" + encodeURIComponent(machine) + "&name=" + encodeURIComponent(name) + "&from=" + new Date(now - 2 * hours * 3600e3).toISOString());
      } catch (e) { continue; }
      const split = now - hours * 3600e3;
      const vals = (after) => j.cycles.filter((c) => c.machine === machine && (Date.parse(c.end) >= split) === after && c.values[agg] !== undefined).map((c) => c.values[agg]);
      const cur = vals(true), prev = vals(false);
      const mean = (v) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : null);
      const m = mean(cur), p = mean(prev);
      rows.push(el("tr", { "data-machine": machine }, el("td", {}, el("a", { href: "/machines/" + machine, text: machine.split("/").slice(1).join("/") + " · " + name })),
        el("td", { class: "num", text: cur.length }), el("td", { class: "num", text: fmtValue(m) }), el("td", { class: "num", text: fmtValue(p) }),
        el("td", { class: "num", text: m !== null && p ? (m >= p ? "+" : "") + ((100 * (m - p)) / p).toFixed(1) + " %" : "—" }),
        el("td", { class: "num", text: fmtValue(cur.reduce((a, b) => a + b, 0)) })));
    }
    body.textContent = "";
    body.append(...rows);
  }
  aggSel.addEventListener("change", loadAll);
  hoursSel.addEventListener("change", loadAll);

  let resize = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => plot && plot.setSize({ width: Math.max(280, chartEl.clientWidth), height: plot.height }), 200);
  });
  machineSel.addEventListener("change", () => { fillAggs(); load(); });
  aggSel.addEventListener("change", load);
  hoursSel.addEventListener("change", load);
  machines().then(() => { fillAggs(); loadAll(); return load(); }, (e) => { note.textContent = e.message; });
  setInterval(load, 10000);
  setInterval(loadAll, 60000);
})();
