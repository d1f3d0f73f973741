// Fleet config: where each edge stands, the YAML editor checked by the
// server as one types (each problem at its line), versions with their
// diffs, roll-outs to all, a site, an edge or a template's devices with
// live progress per edge, and roll-back.
(function () {
  "use strict";
  const { get, api, el, fmtDateTime } = Calx;
  const canEdit = ["admin", "engineer"].includes(document.body.dataset.role);
  const yaml = document.getElementById("yaml");
  const problems = document.getElementById("problems");
  const check = document.getElementById("check");
  let head = 0;

  async function loadStates() {
    const note = document.getElementById("states-note");
    let j;
    try { j = await get("/api/v1/config/edges"); } catch (e) { note.textContent = e.message; return []; }
    const body = document.querySelector("#states tbody");
    body.textContent = "";
    for (const s of j.edges) {
      const applied = s.status ? s.status.applied : null;
      body.append(el("tr", { "data-edge": s.edge },
        el("td", { text: s.edge }), el("td", { class: "wide-only", text: s.site || "—" }),
        el("td", { class: "num", text: s.desired || "—" }), el("td", { class: "num", text: applied === null ? "—" : applied }),
        el("td", { class: s.state === "refused" ? "bad-text" : s.state === "in-sync" ? "ok-text" : "", text: s.state + (s.status && s.status.error ? ": " + s.status.error : "") }),
        el("td", { class: "wide-only", text: s.rollout || "" })));
    }
    note.textContent = j.count ? "" : "No edge in the config yet.";
    return j.edges;
  }

  async function loadVersions() {
    let j;
    try { j = await get("/api/v1/config/versions"); } catch (e) { document.getElementById("save-note").textContent = e.message; return []; }
    const body = document.querySelector("#versions tbody");
    body.textContent = "";
    const vs = j.versions.slice().sort((a, b) => b.version - a.version);
    head = vs.length ? vs[0].version : 0;
    const baseSel = document.getElementById("diff-base");
    const keep = baseSel.dataset.chosen ? Number(baseSel.value) : head; // the newest, unless one was chosen
    baseSel.textContent = "";
    for (const v of vs) baseSel.append(el("option", { value: v.version, text: "#" + v.version, selected: v.version === keep }));
    for (const v of vs) {
      const actions = el("td", {});
      actions.append(el("button", { type: "button", text: "Diff", title: "What changed from this version to the one chosen above",
        onclick: () => diff(v.version, Number(baseSel.value) || head) }));
      if (v.version !== head) {
        if (canEdit) actions.append(" ", el("button", { type: "button", text: "Roll back", title: "Save version " + v.version + " again as the newest", onclick: () => rollback(v.version) }));
      }
      body.append(el("tr", { "data-version": v.version }, el("td", { class: "num", text: v.version }), el("td", { text: fmtDateTime(v.at) }),
        el("td", { class: "wide-only", text: v.author }), el("td", { text: v.message }), actions));
    }
    const sel = document.getElementById("roll-version");
    sel.textContent = "";
    for (const v of vs) sel.append(el("option", { value: v.version, text: "#" + v.version + (v.message ? " · " + v.message : "") }));
    return vs;
  }

  document.getElementById("diff-base").addEventListener("change", (e) => { e.target.dataset.chosen = "1"; });

  async function diff(from, to) {
    const pre = document.getElementById("diff");
    pre.hidden = false;
    pre.textContent = "";
    try {
      const j = await get("/api/v1/config/diff?from=" + from + "&to=" + to);
      for (const line of (j.diff || "(no difference)").split("\n")) {
        const cls = line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "";
        pre.append(el("span", { class: cls, text: line + "\n" }));
      }
    } catch (e) { pre.textContent = e.message; }
  }
  async function rollback(version) {
    if (!window.confirm("Save version " + version + " again as the newest? Roll it out after.")) return;
    try { await api("POST", "/api/v1/config/rollback", { version }); } catch (e) { document.getElementById("roll-note").textContent = e.message; }
    await loadVersions();
    await loadEditor();
  }

  async function loadEditor() {
    if (!head) { yaml.value = ""; document.getElementById("edit-base").textContent = "(no config yet)"; return; }
    try {
      const res = await fetch("/api/v1/config?format=yaml", { credentials: "same-origin" });
      if (!res.ok) throw new Error((await res.json()).error);
      yaml.value = await res.text();
      document.getElementById("edit-base").textContent = "from version #" + head;
    } catch (e) {
      yaml.value = "";
      yaml.disabled = true;
      document.getElementById("save-note").textContent = e.message;
    }
  }

  // Checked by the server as one types, a moment after the last key.
  let timer = 0;
  let asked = 0;
  async function validate() {
    const n = ++asked;
    check.textContent = "checking…";
    check.className = "small muted";
    let j;
    try {
      const res = await fetch("/api/v1/config/validate", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/yaml" }, body: yaml.value });
      j = await res.json();
      if (!res.ok) throw new Error(j.error);
    } catch (e) { check.textContent = e.message; return; }
    if (n !== asked) return; // typed on meanwhile
    problems.textContent = "";
    for (const p of j.errors) {
      const li = el("li", {}, p.line ? el("a", { href: "#", text: "line " + p.line, onclick: (e) => { e.preventDefault(); goLine(p.line); } }) : null, (p.line ? ": " : "") + p.message);
      problems.append(li);
    }
    check.textContent = j.valid ? "valid" : j.errors.length + " problem" + (j.errors.length === 1 ? "" : "s");
    check.className = "small " + (j.valid ? "ok-text" : "bad-text");
    document.getElementById("save-btn").disabled = !j.valid;
  }
  function goLine(n) {
    const lines = yaml.value.split("\n");
    const start = lines.slice(0, n - 1).reduce((s, l) => s + l.length + 1, 0);
    yaml.focus();
    yaml.setSelectionRange(start, start + (lines[n - 1] || "").length);
    yaml.scrollTop = Math.max(0, (n - 5) * parseFloat(getComputedStyle(yaml).lineHeight));
  }
  yaml.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(validate, 400); });
  yaml.addEventListener("keydown", (e) => {
    if (e.key !== "Tab" || e.shiftKey) return; // Tab indents: YAML wants spaces
    e.preventDefault();
    yaml.setRangeText("  ", yaml.selectionStart, yaml.selectionEnd, "end");
    yaml.dispatchEvent(new Event("input"));
  });

  document.getElementById("save").addEventListener("submit", async (e) => {
    e.preventDefault();
    const note = document.getElementById("save-note");
    note.textContent = "";
    try {
      const res = await fetch("/api/v1/config?message=" + encodeURIComponent(document.getElementById("message").value), {
        method: "PUT", credentials: "same-origin", headers: { "Content-Type": "application/yaml" }, body: yaml.value });
      const j = await res.json();
      if (!res.ok) throw new Error(j.error);
      document.getElementById("message").value = "";
      check.textContent = "saved as version #" + j.version;
    } catch (err) { note.textContent = err.message; }
    await loadVersions();
    await loadEditor();
  });

  async function targets(states) {
    const sel = document.getElementById("roll-target");
    sel.textContent = "";
    sel.append(el("option", { value: JSON.stringify({ all: true }), text: "every edge" }));
    for (const site of [...new Set(states.map((s) => s.site).filter(Boolean))].sort()) sel.append(el("option", { value: JSON.stringify({ site }), text: "site " + site }));
    for (const s of states) sel.append(el("option", { value: JSON.stringify({ edge: s.edge }), text: "edge " + s.edge }));
    try {
      const j = await get("/api/v1/templates");
      for (const t of j.templates) sel.append(el("option", { value: JSON.stringify({ template: t.name }), text: "devices of template " + t.name }));
    } catch (e) { /* a scoped user rolls out edge by edge */ }
  }
  document.getElementById("roll").addEventListener("submit", async (e) => {
    e.preventDefault();
    const note = document.getElementById("roll-note");
    note.textContent = "";
    const req = Object.assign({ version: Number(document.getElementById("roll-version").value) }, JSON.parse(document.getElementById("roll-target").value));
    let j;
    try { j = await api("POST", "/api/v1/rollouts", req); } catch (err) { note.textContent = err.message; return; }
    watch(j.rollout);
  });
  // Progress per edge until every edge has applied or refused it.
  async function watch(id) {
    const box = document.getElementById("progress");
    for (let i = 0; i < 240; i++) {
      let j;
      try { j = await get("/api/v1/rollouts/" + encodeURIComponent(id)); } catch (e) { box.textContent = e.message; return; }
      const by = j.by_state || {};
      box.textContent = "";
      box.append(el("p", { id: "progress-line", text: "Roll-out " + id + ": " + Object.entries(by).map(([k, n]) => n + " " + k).join(", ") + " of " + j.total }),
        el("ul", {}, ...j.edges.map((s) => el("li", { class: s.state === "refused" ? "bad-text" : s.state === "in-sync" ? "ok-text" : "", text: s.edge + ": " + s.state + (s.status && s.status.error ? " (" + s.status.error + ")" : "") }))));
      loadStates();
      if (j.edges.every((s) => s.state === "in-sync" || s.state === "refused")) return;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  async function loadInstances() {
    let j;
    try { j = await get("/api/v1/instances"); } catch (e) { return; }
    const body = document.querySelector("#instances tbody");
    body.textContent = "";
    for (const d of j.instances) {
      body.append(el("tr", {}, el("td", {}, el("a", { href: "/uns?open=" + encodeURIComponent(d.Path), text: d.Path })), el("td", { text: d.Template || d.Connector || "—" }),
        el("td", { class: "wide-only", text: d.edge }), el("td", { class: "wide-only", text: d.site || "" })));
    }
  }

  if (!canEdit) {
    yaml.readOnly = true;
    document.getElementById("save").hidden = true;
    document.getElementById("roll").hidden = true;
  }
  (async function start() {
    const states = await loadStates();
    await loadVersions();
    await loadEditor();
    if (canEdit && head) validate();
    await targets(states);
    loadInstances();
    setInterval(loadStates, 10000);
  })();
})();
