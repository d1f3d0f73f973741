// Shared by every page: API calls, formats, a small DOM builder, the live
// feed (resumes by itself after a network blip) and the header.
window.Calx = (function () {
  "use strict";

  // api calls the JSON API; a lost session goes back to the sign-in page.
  async function api(method, url, payload) {
    const res = await fetch(url, {
      method, credentials: "same-origin",
      headers: payload !== undefined ? { "Content-Type": "application/json" } : {},
      body: payload !== undefined ? JSON.stringify(payload) : undefined,
    });
    if (res.status === 401) { toLogin(); throw new Error("signed out"); }
    const text = await res.text();
    let j = {};
    try { j = text ? JSON.parse(text) : {}; } catch (e) { j = { error: text }; }
    if (!res.ok) { const err = new Error(j.error || res.status + " " + res.statusText); err.status = res.status; throw err; }
    return j;
  }
  const get = (url) => api("GET", url);
  function toLogin() { window.location.assign("/login"); }

  // el builds an element: el("td", {class: "num", text: "3"}, child, ...).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function fmtValue(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      return v.toFixed(a < 1 ? 3 : a < 10 ? 2 : a < 1000 ? 1 : 0);
    }
    return String(v);
  }
  function fmtTime(ts) { return ts ? new Date(ts).toLocaleTimeString() : "—"; }
  function fmtDateTime(ts) { return ts ? new Date(ts).toLocaleString() : "—"; }
  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return "—";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 129600) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }
  // device and name of an alarm path, shorter: site/…/kiln1 · name.
  function alarmName(a) { return a.device.split("/").slice(1).join("/") + " · " + a.name; }

  // The connection line in the header.
  const conn = document.getElementById("conn");
  function setConn(state) {
    if (!conn) return;
    conn.textContent = { live: "live", reconnecting: "reconnecting…", down: "offline" }[state] || "";
    conn.className = "conn " + (state === "live" ? "live" : state === "down" ? "down" : "");
  }

  // live opens the live feed for prefixes (all in scope when none):
  // onValues gets each batch (none are sent without it), onAlarms each
  // alarm event. The browser
  // resumes the stream after a blip; onResume runs then, for the page to
  // fetch what it missed. It returns a function that closes the stream.
  function live(prefixes, handlers) {
    const parts = (prefixes || []).map((p) => "prefix=" + encodeURIComponent(p));
    if (!handlers.onValues) parts.push("values=false");
    const q = parts.join("&");
    let es = null;
    let closed = false;
    function open(resumed) {
      es = new EventSource("/api/v1/live" + (q ? "?" + q : ""));
      let wasDown = resumed;
      es.onopen = () => {
        setConn("live");
        if (wasDown && handlers.onResume) handlers.onResume();
        wasDown = false;
      };
      es.onerror = () => {
        wasDown = true;
        if (es.readyState !== EventSource.CLOSED) { setConn("reconnecting"); return; }
        // The server refused the stream (restarting, or the session
        // ended): check the session, then open it again.
        setConn("down");
        setTimeout(() => {
          if (closed) return;
          get("/api/v1/alarms?active=true").then(() => { if (!closed) open(true); }, () => setTimeout(() => open(true), 5000));
        }, 3000);
      };
      es.addEventListener("values", (ev) => handlers.onValues && handlers.onValues(JSON.parse(ev.data)));
      es.addEventListener("alarms", (ev) => {
        const events = JSON.parse(ev.data);
        document.dispatchEvent(new CustomEvent("calx-alarms", { detail: events }));
        if (handlers.onAlarms) handlers.onAlarms(events);
      });
      es.addEventListener("signed-out", () => { es.close(); toLogin(); });
    }
    open(false);
    return () => { closed = true; es.close(); };
  }

  // Header: sign-out and the count of alarms that want attention.
  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async () => {
      await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin" });
      toLogin();
    });
  }
  const badge = document.getElementById("nav-alarms");
  async function countAlarms() {
    if (!badge) return;
    try {
      const j = await get("/api/v1/alarms?active=true");
      const n = j.alarms.filter((a) => a.state === "active_unacked" && !a.shelved_until && !a.suppressed).length;
      badge.textContent = String(n);
      badge.hidden = n === 0;
      // The tab's title counts them too, seen from another tab or window.
      const base = document.title.replace(/^\(\d+\) /, "");
      document.title = n ? "(" + n + ") " + base : base;
      badge.title = n + " active alarm" + (n === 1 ? "" : "s") + " not acknowledged";
    } catch (e) { /* the page shows its own errors */ }
  }
  let alarmTimer = 0;
  document.addEventListener("calx-alarms", () => {
    if (!alarmTimer) alarmTimer = setTimeout(() => { alarmTimer = 0; countAlarms(); }, 500);
  });
  countAlarms();
  setInterval(countAlarms, 30000);

  // The KPIs of a machine of the fleet config (device d): the tags its
  // template's dashboard names (or its state), each with its latest value
  // when it has one.
  async function machineKPIs(d, boards) {
    const layout = boards.find((b) => b.template === d.Template);
    const names = layout && layout.kpis.length ? layout.kpis : ["state"];
    let tags = [];
    try { tags = (await get("/api/v1/latest?prefix=" + encodeURIComponent(d.Path))).tags; } catch (e) { /* shown without values */ }
    return names.map((name) => ({ name, tag: tags.find((t) => t.path === d.Path + "/" + name) }));
  }
  // fmtTagValue is a tag's latest value with its unit.
  function fmtTagValue(t) { return t && t.ts ? fmtValue(t.value) + (t.unit ? " " + t.unit : "") : "—"; }

  // Query parameters of the page's URL, kept in step with what it shows.
  function params() { return new URLSearchParams(window.location.search); }
  function setParams(p) {
    const s = p.toString();
    window.history.replaceState(null, "", window.location.pathname + (s ? "?" + s : ""));
  }

  return { api, get, el, fmtValue, fmtTagValue, fmtTime, fmtDateTime, fmtAge, alarmName, live, setConn, params, setParams, machineKPIs };
})();
