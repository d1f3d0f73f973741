// Fleet: every edge the user may see with its verdict and why, its data
// flow (values per second, data age, buffer, receipt delay), version and
// config; an edge's details with its connections and fleet alarms. The URL
// keeps the edge shown (?edge=group/edge). For engineers and admins, the
// cloud's nodes: which are up, which jobs each runs, how far behind each is.
(function () {
  "use strict";
  const { get, el, fmtValue, fmtAge, fmtDateTime } = Calx;
  const body = document.querySelector("#edges tbody");
  const summary = document.getElementById("summary");
  const detail = document.getElementById("edge");
  let chosen = Calx.params().get("edge");

  async function load() {
    let j;
    try { j = await get("/api/v1/edges"); } catch (e) { summary.textContent = e.message; return; }
    const v = j.verdicts;
    summary.textContent = j.count + " edge" + (j.count === 1 ? "" : "s") + ": " + v.ok + " ok, " + v.degraded + " degraded, " + v.down + " down.";
    body.textContent = "";
    for (const e of j.edges) {
      const tr = el("tr", { class: "clickable" + (e.id === chosen ? " selected" : ""), "data-edge": e.id, tabindex: "0" },
        el("td", { text: e.id }),
        el("td", {}, el("span", { class: "verdict verdict-" + e.verdict, text: e.verdict })),
        el("td", { text: (e.reasons || []).join("; ") || "—" }),
        el("td", { class: "num wide-only", text: fmtValue(e.values_per_sec) }),
        el("td", { class: "num wide-only", text: fmtAge(e.data_age_seconds) }),
        el("td", { class: "num wide-only", text: e.buffer.messages + " (" + fmtValue(e.buffer.full_percent) + " %)" }),
        el("td", { class: "num wide-only", text: fmtAge(e.buffer.oldest_unsent_seconds) }),
        el("td", { class: "num wide-only", text: fmtValue(e.receipt_delay_ms) + " ms" }),
        el("td", { class: "wide-only", text: e.version || "—" }),
        el("td", { class: "wide-only", text: e.config ? e.config.state + " (v" + e.config.desired + ")" : "—" }));
      const pick = () => { chosen = e.id; Calx.setParams(new URLSearchParams({ edge: e.id })); show(e); load(); };
      tr.addEventListener("click", pick);
      tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") pick(); });
      body.append(tr);
      if (e.id === chosen) show(e);
    }
  }

  function show(e) {
    detail.hidden = false;
    detail.textContent = "";
    const skew = e.clock_skew_ms === undefined ? "—" : e.clock_skew_ms + " ms";
    detail.append(
      el("h2", { text: e.id }),
      el("dl", { class: "meta" },
        el("dt", { text: "Verdict" }), el("dd", {}, el("span", { class: "verdict verdict-" + e.verdict, text: e.verdict }), " " + ((e.reasons || []).join("; "))),
        el("dt", { text: "Sparkplug" }), el("dd", { text: (e.online ? "online" : "offline") + ", born " + fmtDateTime(e.birth_at) + ", last seen " + fmtDateTime(e.last_seen) + (e.death_reason ? ", died: " + e.death_reason : "") }),
        el("dt", { text: "Devices" }), el("dd", { text: (e.devices || []).join(", ") + ((e.devices_offline || []).length ? "; offline: " + e.devices_offline.join(", ") : "") || "—" }),
        el("dt", { text: "Data" }), el("dd", { text: fmtValue(e.values_per_sec) + " values/s, last " + fmtAge(e.data_age_seconds) + " ago, " + fmtValue(e.reduction_percent) + " % held back by deadbands" }),
        el("dt", { text: "Buffer" }), el("dd", { text: e.buffer.messages + " messages, " + fmtValue(e.buffer.bytes / 1048576) + " MiB, " + fmtValue(e.buffer.full_percent) + " % full, oldest unsent " + fmtAge(e.buffer.oldest_unsent_seconds) + ", dropped " + e.buffer.dropped }),
        el("dt", { text: "Delay and clock" }), el("dd", { text: "receipt delay " + fmtValue(e.receipt_delay_ms) + " ms, clock skew " + skew }),
        el("dt", { text: "Machine" }), el("dd", { text: "up " + fmtAge(e.uptime_seconds) + ", CPU " + fmtValue(e.cpu_percent) + " %, memory " + fmtValue(e.memory_mib) + " MiB, disk free " + fmtValue(e.disk_free_mib) + " MiB" }),
        el("dt", { text: "Version and config" }), el("dd", { text: (e.version || "—") + "; config applied v" + e.config_applied + (e.config_error ? ", error: " + e.config_error : "") + (e.config ? ", desired v" + e.config.desired + " (" + e.config.state + ")" : "") })),
      el("p", {}, el("a", { id: "health-trend", href: healthTrend(e.id), text: "Buffer, delay and CPU over the last 24 h" })),
      el("h2", { text: "Connections" }),
      table(["Device", "Connected", "Reads/s", "Errors/s", "Latency", "Last error"], (e.connections || []).map((c) =>
        [c.device, c.connected ? "yes" : "no", fmtValue(c.reads_per_sec), fmtValue(c.errors_per_sec), fmtValue(c.latency_ms) + " ms", c.last_error || ""])),
      el("h2", { text: "Fleet alarms" }),
      table(["Kind", "Message", "Raised", "Cleared"], (e.alarms || []).map((a) => [a.kind, a.message, fmtDateTime(a.raised), a.cleared ? fmtDateTime(a.cleared) : "active"])));
  }
  // The edge's own diagnostics are tags under <group>/_edge/<edge>/.
  function healthTrend(id) {
    const [group, edge] = id.split("/");
    const q = new URLSearchParams({ range: "86400" });
    for (const t of ["Buffer/Messages", "Buffer/OldestUnsentSeconds", "Receipt/DelayMs", "Health/CPUPercent"]) q.append("tag", group + "/_edge/" + edge + "/" + t);
    return "/trends?" + q;
  }
  function table(head, rows) {
    if (!rows.length) return el("p", { class: "muted", text: "none" });
    return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", { text: c }))))));
  }
  const nodesPanel = document.getElementById("cloud-nodes");
  const nodesBody = document.querySelector("#nodes tbody");
  const jobNames = { "primary-host": "primary host", transforms: "transforms and alarms" };
  // The API shows the nodes to engineers and admins.
  const seesNodes = ["admin", "engineer"].includes(document.body.dataset.role);
  async function loadNodes() {
    if (!seesNodes) return;
    let j;
    try { j = await get("/api/v1/cluster"); } catch (e) { nodesPanel.hidden = e.status === 403; if (!nodesPanel.hidden) document.getElementById("nodes-summary").textContent = e.message; return; }
    nodesPanel.hidden = false;
    const up = j.nodes.filter((n) => n.up).length;
    document.getElementById("nodes-summary").textContent = j.count === 1
      ? "This cloud runs as one node, without a cluster."
      : up + " of " + j.count + " nodes up" + (up * 2 > j.count ? "" : ": no majority, the backbone cannot store") + "; the backbone keeps " + j.replicas + " copies of each stream. Shown as node " + j.node + " sees them.";
    nodesBody.textContent = "";
    for (const n of j.nodes) {
      const notes = [n.self ? "this node" : "", n.leader ? "leads the backbone" : ""].filter(Boolean).join(", ");
      nodesBody.append(el("tr", { "data-node": n.name },
        el("td", { text: n.name }),
        el("td", {}, el("span", { class: "verdict verdict-" + (n.up ? "ok" : "down"), text: n.up ? "up" : "down" }), notes ? " " + notes : ""),
        el("td", { text: (n.jobs || []).map((x) => jobNames[x] || x).join(", ") || "—" }),
        el("td", { class: "wide-only", text: n.mqtt || "—" }),
        el("td", { class: "wide-only", text: n.version || "—" }),
        el("td", { class: "num wide-only", text: n.self ? "—" : fmtAge(n.active_ns / 1e9) + " ago" }),
        el("td", { class: "num wide-only", text: n.self ? "—" : n.lag + " operations" })));
    }
  }
  load();
  loadNodes();
  setInterval(() => { load(); loadNodes(); }, 10000);
})();
