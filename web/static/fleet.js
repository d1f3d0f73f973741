// Fleet: every edge the user may see with its verdict and why, its data
// flow (values per second, data age, buffer, receipt delay), version and
// config; an edge's details with its connections and fleet alarms. The URL
// keeps the edge shown (?edge=group/edge). For engineers and admins, the
// cloud's nodes: which are up, which jobs each runs, how far behind each is.
// Software updates: the releases and their rollouts wave by wave; admins
// upload a signed build and roll a release out with a canary.
(function () {
  "use strict";
  const { get, api, el, fmtValue, fmtAge, fmtDateTime } = Calx;
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
        el("td", { class: "wide-only", text: versionText(e) }),
        el("td", { class: "wide-only", text: e.config ? e.config.state + " (v" + e.config.desired + ")" : "—" }));
      const pick = () => { chosen = e.id; Calx.setParams(new URLSearchParams({ edge: e.id })); show(e); load(); };
      tr.addEventListener("click", pick);
      tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") pick(); });
      body.append(tr);
      if (e.id === chosen) show(e);
    }
  }

  // The version an edge runs, and the update it is at when not done.
  function versionText(e) {
    const v = (e.version || "—").replace(/ \(.*\)$/, "");
    const u = e.update;
    if (!u || u.step === "healthy" || u.step === "") return v;
    return v + " · " + u.version + " " + u.step + (u.step === "downloading" ? " " + Math.round(u.percent) + " %" : "");
  }
  function updateText(e) {
    const u = e.update;
    if (!u) return "none reported";
    return "release " + u.version + ": " + u.step + (u.step === "downloading" ? " " + Math.round(u.percent) + " %" : "") + (u.error ? " — " + u.error : "");
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
        el("dt", { text: "Software update" }), el("dd", { text: updateText(e) }),
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
  const isAdmin = document.body.dataset.role === "admin";
  const waveText = (w) => w.name + ": " + w.state + (w.reason ? " (" + w.reason + ")" : "");
  async function loadUpdates() {
    let rels, ros;
    try { [rels, ros] = await Promise.all([get("/api/v1/releases"), get("/api/v1/releases/rollouts")]); } catch (e) { document.getElementById("updates-summary").textContent = e.message; return; }
    const running = ros.rollouts.filter((r) => r.state === "running").length;
    document.getElementById("updates-summary").textContent = rels.count + " release" + (rels.count === 1 ? "" : "s") + ", " +
      ros.count + " rollout" + (ros.count === 1 ? "" : "s") + (running ? ", " + running + " running" : "") + ".";
    const rb = document.querySelector("#releases tbody");
    rb.textContent = "";
    for (const r of rels.releases) {
      rb.append(el("tr", { "data-release": r.version }, el("td", { text: r.version }),
        el("td", { text: r.builds.map((b) => b.os + "/" + b.arch + " (" + fmtValue(b.size / 1048576) + " MiB)").join(", ") }),
        el("td", { class: "wide-only", text: fmtDateTime(r.uploaded_at) + " by " + r.uploaded_by }),
        el("td", { class: "wide-only", text: r.notes || "" })));
    }
    if (!rels.count) rb.append(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "No release uploaded yet: calx release sign, then upload the build with its manifest." })));
    const ob = document.querySelector("#rollouts tbody");
    ob.textContent = "";
    for (const r of ros.rollouts.slice(0, 10)) {
      const cls = r.state === "failed" ? "bad-text" : r.state === "done" ? "ok-text" : "";
      ob.append(el("tr", { "data-rollout": r.id }, el("td", { text: r.version }), el("td", { text: r.selection }),
        el("td", { class: cls, text: r.state + (r.reason ? ": " + r.reason : "") }),
        el("td", { class: "wide-only", text: r.waves.map(waveText).join("; ") }),
        el("td", { class: "wide-only", text: fmtDateTime(r.at) + " by " + r.by })));
    }
    if (!ros.count) ob.append(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "No rollout yet." })));
    if (isAdmin) fillRollForm(rels.releases);
  }
  // The roll-out form's choices: releases, and all edges, a site's or one.
  async function fillRollForm(releases) {
    document.getElementById("update-admin").hidden = false;
    const vs = document.getElementById("rr-version");
    const keep = vs.value;
    vs.textContent = "";
    for (const r of releases) vs.append(el("option", { value: r.version, text: r.version, selected: r.version === keep }));
    const target = document.getElementById("rr-target"), canary = document.getElementById("rr-canary");
    if (target.options.length) return;
    let edges = [];
    try { edges = (await get("/api/v1/edges")).edges.map((e) => e.id); } catch (e) { return; }
    let sites = [];
    try { sites = (await get("/api/v1/sites")).sites.map((s) => s.site || s.name).filter(Boolean); } catch (e) { sites = []; }
    target.append(el("option", { value: "all:", text: "all edges" }));
    for (const s of sites) target.append(el("option", { value: "site:" + s, text: "site " + s }));
    for (const e of edges) {
      target.append(el("option", { value: "edge:" + e, text: e }));
      canary.append(el("option", { value: e, text: e }));
    }
  }
  document.getElementById("roll-release").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = document.getElementById("rr-note");
    note.textContent = "";
    const [kind, what] = document.getElementById("rr-target").value.split(/:(.*)/s);
    const req = { version: document.getElementById("rr-version").value, healthy_for: document.getElementById("rr-hold").value };
    if (kind === "all") req.all = true; else req[kind] = what;
    const c = document.getElementById("rr-canary").value;
    if (c) req.canary = [c];
    if (!window.confirm("Roll release " + req.version + " out to " + (req.all ? "all edges" : kind + " " + what) + (c ? ", " + c + " first" : "") + "?")) return;
    try { await api("POST", "/api/v1/releases/rollouts", req); } catch (e) { note.textContent = e.message; }
    loadUpdates();
    load();
  });
  document.getElementById("upload-release").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = document.getElementById("ur-note");
    const form = new FormData();
    form.append("manifest", document.getElementById("ur-manifest").files[0]);
    form.append("binary", document.getElementById("ur-binary").files[0]);
    note.textContent = "uploading…";
    note.className = "small";
    try {
      const res = await fetch("/api/v1/releases", { method: "POST", credentials: "same-origin", body: form });
      const j = await res.json();
      if (!res.ok) throw new Error(j.error || res.statusText);
      note.textContent = "release " + j.version + " kept (" + j.builds.map((b) => b.os + "/" + b.arch).join(", ") + ")";
    } catch (e) { note.textContent = e.message; note.className = "small error"; }
    loadUpdates();
  });
  // The sinks (PostgreSQL...) to engineers and admins, shown when there are any.
  async function loadSinks() {
    if (!seesNodes) return;
    let j;
    try { j = await get("/api/v1/sinks"); } catch (e) { return; }
    const panel = document.getElementById("sinks");
    panel.hidden = !j.count;
    const tb = document.querySelector("#sinks-table tbody");
    tb.textContent = "";
    for (const k of j.sinks) {
      const state = !k.running ? "on another node" : k.last_error ? "failing: " + k.last_error : "ok";
      tb.append(el("tr", { "data-sink": k.name }, el("td", { text: k.name }),
        el("td", { class: k.last_error ? "bad-text" : "ok-text", text: state }),
        el("td", { class: "num", text: String(k.written) }),
        el("td", { class: "num", text: k.behind < 0 ? "—" : k.behind + " messages" }),
        el("td", { class: "num wide-only", text: String(k.failures) })));
    }
  }
  load();
  loadNodes();
  loadUpdates();
  loadSinks();
  setInterval(() => { load(); loadNodes(); loadUpdates(); loadSinks(); }, 10000);
})();
