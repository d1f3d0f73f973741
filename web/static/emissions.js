// The day's emission exceedances, per site and one by one, for the
// environment officer; printable (the print style leaves out the page's
// controls). The URL keeps the day.
(function () {
  "use strict";
  const { get, el, fmtValue, fmtDateTime, fmtAge } = Calx;
  const dayIn = document.getElementById("day");
  const note = document.getElementById("note");
  const iso = (d) => d.toISOString().slice(0, 10);

  async function load() {
    const day = dayIn.value;
    Calx.setParams(new URLSearchParams({ day }));
    document.getElementById("day-title").textContent = day;
    document.title = "Emission exceedances " + day + " · Calx";
    let j;
    try { j = await get("/api/v1/emissions/report?day=" + encodeURIComponent(day)); } catch (e) { note.textContent = e.message; return; }
    const sites = new Map();
    for (const e of j.exceedances) {
      const site = e.alarm.split("/").slice(0, 2).join("/");
      const s = sites.get(site) || { n: 0, alarms: new Set() };
      s.n++;
      s.alarms.add(e.alarm);
      sites.set(site, s);
    }
    const sum = document.querySelector("#summary tbody");
    sum.textContent = "";
    for (const [site, s] of [...sites].sort()) {
      const seconds = [...s.alarms].reduce((t, a) => t + (j.seconds_exceeded[a] || 0), 0);
      sum.append(el("tr", { "data-site": site }, el("td", { text: site.split("/")[1] }), el("td", { class: "num", text: s.n }),
        el("td", { class: "num", text: fmtAge(seconds) }), el("td", { text: [...s.alarms].map(short).join(", ") })));
    }
    if (!sites.size) sum.append(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "No exceedance on " + day + "." })));
    const list = document.querySelector("#list tbody");
    list.textContent = "";
    for (const e of j.exceedances) {
      list.append(el("tr", {}, el("td", {}, el("span", { class: "prio prio-" + e.priority, text: e.priority }), " " + short(e.alarm)),
        el("td", { class: "wide-only", text: e.tag }), el("td", { class: "num", text: fmtValue(e.limit) }),
        el("td", { class: "num", text: e.peak === undefined ? "—" : fmtValue(e.peak) }),
        el("td", { text: fmtDateTime(e.start) }), el("td", { text: e.end ? fmtDateTime(e.end) : "still exceeded" }),
        el("td", { class: "num", text: fmtAge(e.seconds) })));
    }
    note.textContent = j.exceedances.length + " exceedance" + (j.exceedances.length === 1 ? "" : "s") + " of class " + j.class + ".";
  }
  function short(alarm) {
    const [device, name] = alarm.split("/_alarms/");
    return device.split("/").slice(1).join("/") + " · " + name;
  }
  function setDay(d) { dayIn.value = iso(d); load(); }
  document.getElementById("today").addEventListener("click", () => setDay(new Date()));
  document.getElementById("yesterday").addEventListener("click", () => setDay(new Date(Date.now() - 864e5)));
  document.getElementById("print").addEventListener("click", () => window.print());
  dayIn.addEventListener("change", load);
  dayIn.value = Calx.params().get("day") || iso(new Date());
  load();
})();
