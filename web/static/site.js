// A site: its edges' health, its machines as cards with state, KPIs (as
// their template's dashboard names them) and active alarms, the site's
// alarms and its areas.
(function () {
  "use strict";
  const { get, el, fmtDateTime, alarmName } = Calx;
  const site = decodeURIComponent(window.location.pathname.replace(/^\/sites\//, "")).replace(/\/$/, "");
  const prios = ["urgent", "high", "medium", "low"];

  async function load() {
    document.getElementById("name").textContent = site.split("/").slice(1).join("/") || site;
    document.title = (site.split("/")[1] || site) + " · Calx";
    let kids, inst, boards, edges, alarms;
    try {
      [kids, inst, boards, edges, alarms] = await Promise.all([get("/api/v1/namespace/children?prefix=" + encodeURIComponent(site)),
        get("/api/v1/instances").then((j) => j.instances || []), get("/api/v1/dashboards").then((j) => j.dashboards || []),
        get("/api/v1/edges"), get("/api/v1/alarms?active=true&device=" + encodeURIComponent(site))]);
    } catch (e) { document.getElementById("note").textContent = e.message; return; }
    const byEdge = new Map(edges.edges.map((e) => [e.id, e]));
    const edgeBox = document.getElementById("edges");
    edgeBox.textContent = "";
    const ids = new Set(kids.children.flatMap((n) => n.edges || []));
    for (const id of [...ids].sort()) {
      const e = byEdge.get(id) || { verdict: "down", reasons: ["never seen"] };
      edgeBox.append(el("a", { href: "/fleet?edge=" + encodeURIComponent(id), class: "verdict verdict-" + e.verdict, title: (e.reasons || []).join("; "), text: id.split("/").pop() + " " + e.verdict }), " ");
    }
    const machines = inst.filter((d) => d.Path.startsWith(site + "/"));
    const box = document.getElementById("machines");
    box.textContent = "";
    for (const d of machines) {
      const kpis = await Calx.machineKPIs(d, boards);
      const mine = alarms.alarms.filter((a) => a.device === d.Path);
      const worst = prios.find((p) => mine.some((a) => a.priority === p && a.state === "active_unacked"));
      box.append(el("article", { class: "card" + (worst === "urgent" || worst === "high" ? " down" : ""), "data-machine": d.Path },
        el("h2", {}, el("a", { href: "/machines/" + d.Path, text: d.Path.slice(site.length + 1) })),
        el("span", { class: "muted small", text: "template " + (d.Template || "—") }),
        el("dl", { class: "meta" }, ...kpis.flatMap((k) => [el("dt", { text: k.name }), el("dd", { text: Calx.fmtTagValue(k.tag) })])),
        el("div", { class: "facts" }, ...(mine.length ? prios.map((p) => [p, mine.filter((a) => a.priority === p).length]).filter(([, n]) => n)
          .map(([p, n]) => el("span", { class: "prio prio-" + p, text: n + " " + p })) : [el("span", { class: "muted", text: "no active alarms" })]))));
    }
    document.getElementById("note").textContent = machines.length ? "" : "No machine of a template at this site: see its areas in the namespace.";
    const body = document.querySelector("#alarms tbody");
    body.textContent = "";
    for (const a of alarms.alarms) {
      body.append(el("tr", { class: a.state }, el("td", {}, el("span", { class: "prio prio-" + a.priority, text: a.priority })),
        el("td", { text: alarmName(a) }), el("td", { class: "state", text: a.state.replace("_", " ") }), el("td", { class: "wide-only", text: fmtDateTime(a.since) })));
    }
    document.getElementById("alarms-note").textContent = alarms.count ? "" : "None.";
    const areas = document.getElementById("areas");
    areas.textContent = "";
    for (const n of kids.children.filter((n) => n.tags > 0)) {
      areas.append(el("li", {}, el("a", { href: "/uns?open=" + encodeURIComponent(n.path), text: n.name }), el("span", { class: "muted", text: " · " + n.tags + " tags" })));
    }
  }
  load();
  setInterval(load, 15000);
})();
