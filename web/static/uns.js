// The namespace: a tree opened a level at a time (the browser never holds
// the whole namespace), a search, live values of what is on screen, and
// the metadata of the selected tag. The URL keeps the open path (?open=)
// and the search (?q=).
(function () {
  "use strict";
  const { get, el, fmtValue, fmtTime } = Calx;
  const tree = document.getElementById("tree");
  const results = document.getElementById("results");
  const resultsBody = results.querySelector("tbody");
  const details = document.getElementById("details");
  const note = document.getElementById("note");
  const q = document.getElementById("q");
  const STALE_MS = 5 * 60 * 1000; // a value older than this is shown as stale

  const shown = new Map(); // path -> {tag, value element} of tags on screen
  const open = new Set(); // open folders
  let selected = null;

  function valueCell(tag, cls) {
    const v = el(cls === "td" ? "td" : "span", { class: "value" + (cls === "td" ? " num" : "") });
    paint(v, tag);
    return v;
  }
  function paint(v, tag) {
    v.textContent = tag.ts ? fmtValue(tag.value) + (tag.unit ? " " + tag.unit : "") : "—";
    v.title = tag.ts ? tag.quality + " at " + new Date(tag.ts).toLocaleString() : "no value yet";
    const stale = tag.ts && Date.now() - Date.parse(tag.ts) > STALE_MS;
    v.classList.toggle("stale", !!stale);
    v.classList.toggle("q-bad", tag.quality === "bad");
    v.classList.toggle("q-uncertain", tag.quality === "uncertain");
  }

  function nodeItem(n) {
    const li = el("li", { role: "treeitem", "data-path": n.path });
    const isFolder = n.tags > 0;
    const row = el("div", { class: "node" + (isFolder ? " folder" : " tag"), tabindex: "0" },
      el("span", { class: "twisty", "aria-hidden": "true", text: isFolder ? "▸" : "" }),
      el("span", { class: "name", text: n.name, title: n.tag && n.tag.description ? n.tag.description : n.path }),
      isFolder ? el("span", { class: "n", text: n.tags }) : null);
    if (n.tag) {
      const v = valueCell(n.tag);
      row.append(v);
      shown.set(n.path, { tag: n.tag, v });
    }
    li.append(row);
    if (isFolder) li.setAttribute("aria-expanded", "false");
    const act = () => (isFolder ? toggle(li, n) : select(n.tag, row));
    row.addEventListener("click", act);
    row.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); act(); } });
    return li;
  }

  async function fill(ul, prefix) {
    const j = await get("/api/v1/namespace/children" + (prefix ? "?prefix=" + encodeURIComponent(prefix) : ""));
    ul.textContent = "";
    for (const n of j.children) ul.append(nodeItem(n));
    if (j.truncated) ul.append(el("li", { class: "muted small", text: "… more: search to narrow" }));
    return j;
  }

  async function toggle(li, n) {
    const row = li.firstChild;
    if (open.has(n.path)) {
      open.delete(n.path);
      li.setAttribute("aria-expanded", "false");
      row.querySelector(".twisty").textContent = "▸";
      const sub = li.querySelector("ul");
      if (sub) { forget(sub); sub.remove(); }
    } else {
      open.add(n.path);
      li.setAttribute("aria-expanded", "true");
      row.querySelector(".twisty").textContent = "▾";
      const sub = el("ul", { role: "group" });
      li.append(sub);
      try { await fill(sub, n.path); } catch (e) { note.textContent = e.message; }
    }
    const p = Calx.params();
    p.set("open", [...open].join(","));
    if (!open.size) p.delete("open");
    Calx.setParams(p);
    relive();
  }
  function forget(root) {
    root.querySelectorAll("li[data-path]").forEach((li) => { shown.delete(li.dataset.path); open.delete(li.dataset.path); });
  }

  // Open the folders of ?open= (and those above them), one level after another.
  async function restore(paths) {
    for (const target of paths) {
      const segs = target.split("/");
      for (let i = 1; i <= segs.length; i++) {
        const p = segs.slice(0, i).join("/");
        if (open.has(p)) continue;
        const li = tree.querySelector('li[data-path="' + CSS.escape(p) + '"]');
        if (!li || li.getAttribute("aria-expanded") === null) break;
        await toggle(li, { path: p, tags: 1 });
      }
    }
  }

  // The fleet config's devices, for the template of a tag's machine.
  let instances = null;
  async function templateOf(path) {
    if (!instances) instances = await get("/api/v1/instances").then((j) => j.instances || [], () => []);
    const d = instances.find((i) => path.startsWith(i.Path + "/"));
    return d ? d.Template || d.Connector || "" : "";
  }

  function select(tag, row) {
    document.querySelectorAll(".node.selected, tr.selected").forEach((x) => x.classList.remove("selected"));
    if (row) row.classList.add("selected");
    selected = tag.path;
    const sp = tag.sparkplug || {};
    const topic = "uns/" + tag.path;
    details.textContent = "";
    details.append(
      el("h2", { text: tag.path.split("/").pop() }),
      el("dl", { class: "meta" },
        el("dt", { text: "Path" }), el("dd", { id: "d-path", text: tag.path }),
        el("dt", { text: "Value" }), el("dd", {}, valueCell(tag)),
        el("dt", { text: "Quality" }), el("dd", { class: "q-" + tag.quality, text: tag.quality + (tag.reason ? " (" + tag.reason + ")" : "") }),
        el("dt", { text: "Time" }), el("dd", { text: tag.ts ? new Date(tag.ts).toLocaleString() : "—" }),
        el("dt", { text: "Type" }), el("dd", { text: tag.datatype + (tag.unit ? ", " + tag.unit : "") + (tag.writable ? ", writable" : "") }),
        tag.description ? el("dt", { text: "Description" }) : null, tag.description ? el("dd", { text: tag.description }) : null,
        el("dt", { text: "Source edge" }), el("dd", { text: sp.group ? sp.group + "/" + sp.edge_node + (sp.device ? " · device " + sp.device : "") : "calculated in the cloud" }),
        sp.metric ? el("dt", { text: "Sparkplug metric" }) : null, sp.metric ? el("dd", { text: sp.metric }) : null,
        el("dt", { text: "MQTT topic" }), el("dd", { text: topic }),
        el("dt", { text: "Template" }), el("dd", { id: "d-template", text: "…" })),
      el("p", { class: "toolbar" },
        el("a", { href: "/trends?tag=" + encodeURIComponent(tag.path), text: "Open in a trend" }),
        el("a", { href: "/machines/" + tag.path.split("/").slice(0, -1).join("/"), text: "Machine" }),
        el("button", { type: "button", onclick: () => copy(tag.path), text: "Copy path" }),
        el("button", { type: "button", onclick: () => copy(topic), text: "Copy topic" })));
    templateOf(tag.path).then((t) => { const dd = document.getElementById("d-template"); if (dd && selected === tag.path) dd.textContent = t || "none (not a device of the fleet config)"; });
  }
  async function copy(text) {
    try { await navigator.clipboard.writeText(text); note.textContent = "Copied " + text; } catch (e) { note.textContent = text; }
  }

  // Search: the server looks, the browser shows the first matches.
  let searchTimer = 0;
  async function search() {
    const words = q.value.trim();
    const p = Calx.params();
    if (words) p.set("q", words); else p.delete("q");
    Calx.setParams(p);
    if (!words) { results.hidden = true; tree.hidden = false; note.textContent = ""; relive(); return; }
    let j;
    const began = performance.now();
    try { j = await get("/api/v1/namespace/search?limit=200&q=" + encodeURIComponent(words)); } catch (e) { note.textContent = e.message; return; }
    if (q.value.trim() !== words) return; // typed on meanwhile
    tree.hidden = true;
    results.hidden = false;
    resultsBody.textContent = "";
    shown.clear();
    for (const t of j.tags) {
      const v = valueCell(t, "td");
      const tr = el("tr", { class: "clickable", "data-path": t.path, tabindex: "0" },
        el("td", { text: t.path, title: t.description || "" }), v,
        el("td", { class: "wide-only", text: t.unit }), el("td", { class: "wide-only ts", text: fmtTime(t.ts) }));
      tr.addEventListener("click", () => select(t, tr));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") select(t, tr); });
      resultsBody.append(tr);
      shown.set(t.path, { tag: t, v });
    }
    note.textContent = j.count + " tag" + (j.count === 1 ? "" : "s") + " found" + (j.truncated ? ", the first " + j.tags.length + " shown" : "");
    document.body.dataset.searchMs = String(Math.round(performance.now() - began)); // asked to shown
    relive();
  }
  q.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(search, 150); });
  document.getElementById("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });

  // Live values of the tags on screen: one stream for the open folders
  // (or the search's tags), opened again when they change.
  let close = null;
  let reliveTimer = 0;
  function relive() {
    clearTimeout(reliveTimer);
    reliveTimer = setTimeout(() => {
      if (close) close();
      const prefixes = results.hidden ? [...open] : [...shown.keys()];
      if (!prefixes.length || prefixes.length > 50) { close = null; Calx.setConn(""); return; }
      close = Calx.live(prefixes, { onValues, onResume: refresh });
    }, 300);
  }
  const pending = new Map();
  let frame = 0;
  function onValues(batch) {
    for (const s of batch) {
      if (s.historical || !shown.has(s.path)) continue;
      pending.set(s.path, s);
    }
    if (pending.size && !frame) frame = requestAnimationFrame(apply);
  }
  function apply() {
    frame = 0;
    for (const [path, s] of pending) {
      const item = shown.get(path);
      if (!item) continue;
      Object.assign(item.tag, { value: s.value, ts: s.ts, quality: s.quality });
      paint(item.v, item.tag);
      item.v.classList.remove("flash");
      void item.v.offsetWidth;
      item.v.classList.add("flash");
    }
    pending.clear();
  }
  // After a blip, fetch what is on screen again: values may have moved on.
  async function refresh() {
    const prefixes = results.hidden ? [...open] : [...shown.keys()];
    for (const prefix of prefixes) {
      let j;
      try { j = await get("/api/v1/latest?prefix=" + encodeURIComponent(prefix)); } catch (e) { continue; }
      for (const t of j.tags) {
        const item = shown.get(t.path);
        if (item) { Object.assign(item.tag, t); paint(item.v, item.tag); }
      }
    }
  }
  // Values not updated for a while turn grey.
  setInterval(() => { for (const item of shown.values()) paint(item.v, item.tag); }, 30000);

  (async function start() {
    try { await fill(tree, ""); } catch (e) { note.textContent = e.message; return; }
    const p = Calx.params();
    if (p.get("open")) await restore(p.get("open").split(","));
    if (p.get("q")) { q.value = p.get("q"); await search(); }
    if (!tree.children.length) note.textContent = "No tags yet: they appear when edge nodes are born.";
    document.body.dataset.treeMs = String(Math.round(performance.now())); // since the page began to load
  })();
})();
