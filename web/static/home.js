// Home: the sites the user may see, as cards: the health of their edges,
// their active alarms by priority, their tag count; a search for any tag.
(function () {
  "use strict";
  const { get, el } = Calx;
  const sitesEl = document.getElementById("sites");
  const note = document.getElementById("note");
  const prios = ["urgent", "high", "medium", "low"];

  async function sites() {
    // Sites are the second level of the namespace (enterprise/site).
    const top = await get("/api/v1/namespace/children");
    const out = [];
    for (const ent of top.children.filter((n) => n.tags > 0 && !n.name.startsWith("_"))) {
      const lvl = await get("/api/v1/namespace/children?prefix=" + encodeURIComponent(ent.path));
      for (const s of lvl.children) if (s.tags > 0 && !s.name.startsWith("_")) out.push(s);
    }
    return out;
  }

  // machines of a site with the KPIs their template's dashboard names
  // (or its state), at most a few per card.
  async function machines(site, inst, boards) {
    const mine = inst.filter((d) => d.Path.startsWith(site + "/")).slice(0, 6);
    const out = [];
    for (const d of mine) {
      const kpis = (await Calx.machineKPIs(d, boards)).filter((k) => k.tag);
      out.push(el("li", {}, el("a", { href: "/machines/" + d.Path, text: d.Path.split("/").pop() }),
        ...kpis.map((k) => el("span", { class: "kpi", title: k.tag.path }, " · " + k.tag.path.split("/").pop() + " ", el("strong", { text: Calx.fmtTagValue(k.tag) })))));
    }
    return out.length ? el("ul", { class: "machines" }, ...out) : null;
  }

  async function load() {
    let list, edges, alarms, inst, boards;
    try {
      [list, edges, alarms, inst, boards] = await Promise.all([sites(), get("/api/v1/edges"), get("/api/v1/alarms?active=true"),
        get("/api/v1/instances").then((j) => j.instances || [], () => []), get("/api/v1/dashboards").then((j) => j.dashboards || [], () => [])]);
    } catch (e) { note.textContent = e.message; return; }
    const machineLists = await Promise.all(list.map((s) => machines(s.path, inst, boards)));
    const verdict = new Map(edges.edges.map((e) => [e.id, e]));
    sitesEl.textContent = "";
    list.forEach((s, i) => {
      const mine = alarms.alarms.filter((a) => a.device === s.path || a.device.startsWith(s.path + "/"));
      const byPrio = prios.map((p) => [p, mine.filter((a) => a.priority === p && !a.shelved_until && !a.suppressed).length]).filter(([, n]) => n > 0);
      const siteEdges = (s.edges || []).map((id) => verdict.get(id) || { id, verdict: "down", reasons: ["never seen"] });
      const worst = siteEdges.some((e) => e.verdict === "down") ? "down" : siteEdges.some((e) => e.verdict === "degraded") ? "degraded" : "ok";
      const card = el("article", { class: "card" + (worst === "down" ? " down" : ""), "data-site": s.path },
        el("h2", {}, el("a", { href: "/sites/" + s.path, text: s.path.split("/").slice(1).join("/") })),
        el("div", { class: "facts" },
          el("span", { class: "verdict verdict-" + worst, title: siteEdges.map((e) => e.id + ": " + e.verdict + (e.reasons && e.reasons.length ? " (" + e.reasons.join("; ") + ")" : "")).join("\n"),
            text: siteEdges.length + " edge" + (siteEdges.length === 1 ? "" : "s") + " " + worst }),
          el("span", { class: "muted", text: s.tags + " tags" })),
        el("div", { class: "facts" },
          ...(byPrio.length ? byPrio.map(([p, n]) => el("a", { class: "prio prio-" + p, href: "/alarms", text: n + " " + p }))
            : [el("span", { class: "muted", text: "no active alarms" })])),
        machineLists[i]);
      sitesEl.append(card);
    });
    note.textContent = list.length ? "" : "No sites yet: tags appear when edge nodes are born.";
  }
  load();
  setInterval(load, 15000);
})();
