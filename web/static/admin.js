// Administration: users with roles and scopes, API tokens, MQTT accounts
// and edge identities (secrets shown once), and the audit log.
(function () {
  "use strict";
  const { get, api, el, fmtDateTime } = Calx;
  const scopeOf = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
  const showScope = (s) => (s && s.length ? s.join(", ") : "everything");
  function act(noteId, f) {
    return async () => {
      const note = document.getElementById(noteId);
      note.textContent = "";
      try { await f(); } catch (e) { note.textContent = e.message; }
      loadAll();
    };
  }

  let users = [];
  async function loadUsers() {
    const j = await get("/api/v1/users");
    users = j.users;
    const body = document.querySelector("#users tbody");
    body.textContent = "";
    for (const u of users) {
      const actions = el("td", {},
        el("button", { type: "button", text: "Edit", onclick: () => edit(u) }), " ",
        el("button", { type: "button", text: "Sign out", title: "End every sign-in of " + u.username,
          onclick: act("users-note", () => api("POST", "/api/v1/users/" + encodeURIComponent(u.username) + "/sign-out")) }));
      if (u.source === "api") {
        actions.append(" ", el("button", { type: "button", class: "danger", text: "Delete", onclick: act("users-note", async () => {
          if (window.confirm("Delete the user " + u.username + "?")) await api("DELETE", "/api/v1/users/" + encodeURIComponent(u.username));
        }) }));
      }
      body.append(el("tr", { "data-user": u.username }, el("td", { text: u.username }), el("td", { text: u.role }),
        el("td", { text: showScope(u.scope) }), el("td", { class: "wide-only", text: u.source === "api" ? "made here" : "cloud.yaml" }), actions));
    }
  }
  function edit(u) {
    document.getElementById("u-name").value = u.username;
    document.getElementById("u-role").value = u.role;
    document.getElementById("u-scope").value = (u.scope || []).join(", ");
    document.getElementById("u-pw").value = "";
    document.getElementById("u-pw").focus();
  }
  document.getElementById("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act("users-note", async () => {
      const name = document.getElementById("u-name").value.trim();
      const body = { role: document.getElementById("u-role").value, scope: scopeOf(document.getElementById("u-scope").value) };
      const pw = document.getElementById("u-pw").value;
      if (pw) body.password = pw;
      if (users.some((u) => u.username === name)) await api("PATCH", "/api/v1/users/" + encodeURIComponent(name), body);
      else await api("POST", "/api/v1/users", Object.assign({ username: name }, body));
      e.target.reset();
    })();
  });

  async function loadTokens() {
    const j = await get("/api/v1/tokens");
    const body = document.querySelector("#tokens tbody");
    body.textContent = "";
    for (const t of j.tokens) {
      body.append(el("tr", { "data-token": t.id }, el("td", { text: t.name, title: "made by " + t.created_by + " " + fmtDateTime(t.created) }),
        el("td", { text: t.role }), el("td", { text: showScope(t.scope) }),
        el("td", { class: "wide-only" + (t.expired ? " q-bad" : ""), text: fmtDateTime(t.expires) + (t.expired ? " (expired)" : "") }),
        el("td", { class: "wide-only", text: t.last_used ? fmtDateTime(t.last_used) : "never" }),
        el("td", {}, el("button", { type: "button", class: "danger", text: "Revoke", onclick: act("tokens-note", async () => {
          if (window.confirm("Revoke the token " + t.name + "? What uses it stops at once.")) await api("DELETE", "/api/v1/tokens/" + encodeURIComponent(t.id));
        }) }))));
    }
  }
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act("tokens-note", async () => {
      const j = await api("POST", "/api/v1/tokens", { name: document.getElementById("t-name").value.trim(), role: document.getElementById("t-role").value,
        scope: scopeOf(document.getElementById("t-scope").value), days: Number(document.getElementById("t-days").value) });
      const s = document.getElementById("token-secret");
      s.hidden = false;
      s.textContent = "The token for " + j.name + ", shown this once: " + j.token;
      e.target.reset();
    })();
  });

  async function loadMQTT() {
    const j = await get("/api/v1/mqtt-users");
    const body = document.querySelector("#mqtt tbody");
    body.textContent = "";
    for (const a of j.accounts) {
      const name = encodeURIComponent(a.username);
      const actions = el("td", {},
        el("button", { type: "button", text: a.disabled ? "Enable" : "Disable",
          onclick: act("mqtt-note", () => api("POST", "/api/v1/mqtt-users/" + name + (a.disabled ? "/enable" : "/disable"))) }), " ",
        el("button", { type: "button", text: "New password", onclick: act("mqtt-note", async () => {
          if (!window.confirm("Give " + a.username + " a new password? Its sessions end; the old password stops working.")) return;
          const r = await api("POST", "/api/v1/mqtt-users/" + name + "/password");
          secret("The new password of " + a.username + ", shown this once: " + r.password);
        }) }));
      if (a.source === "api") {
        actions.append(" ", el("button", { type: "button", class: "danger", text: "Delete", onclick: act("mqtt-note", async () => {
          if (window.confirm("Delete the account " + a.username + "?")) await api("DELETE", "/api/v1/mqtt-users/" + name);
        }) }));
      }
      body.append(el("tr", { "data-account": a.username, class: a.disabled ? "shelved" : "" }, el("td", { text: a.username + (a.disabled ? " (disabled)" : "") }),
        el("td", { text: a.role }), el("td", { class: "wide-only", text: a.group ? a.group + "/" + a.edge_node : (a.subscribe || []).join(", ") }),
        el("td", { class: "num", text: a.sessions }), el("td", { class: "wide-only", text: a.source === "api" ? "made here" : "cloud.yaml" }), actions));
    }
  }
  function secret(text) {
    const s = document.getElementById("mqtt-secret");
    s.hidden = false;
    s.textContent = text;
  }
  document.getElementById("edge-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act("mqtt-note", async () => {
      const j = await api("POST", "/api/v1/edges", { group: document.getElementById("e-group").value.trim(), edge_node: document.getElementById("e-edge").value.trim() });
      secret("Edge " + j.username + ": its password, shown this once: " + j.password);
      e.target.reset();
    })();
  });

  async function loadAudit() {
    const j = await get("/api/v1/audit?limit=500");
    const f = document.getElementById("a-filter").value.trim().toLowerCase();
    const body = document.querySelector("#audit tbody");
    body.textContent = "";
    for (const a of j.entries) {
      if (f && ![a.user, a.action, a.path].some((x) => (x || "").toLowerCase().includes(f))) continue;
      body.append(el("tr", {}, el("td", { text: fmtDateTime(a.ts) }), el("td", { text: a.user }), el("td", { text: a.action }),
        el("td", { text: a.path + (a.value ? " = " + a.value : "") }), el("td", { class: "wide-only", text: a.result })));
    }
  }
  document.getElementById("audit-form").addEventListener("submit", (e) => { e.preventDefault(); loadAudit(); });

  async function loadAll() {
    for (const [f, note] of [[loadUsers, "users-note"], [loadTokens, "tokens-note"], [loadMQTT, "mqtt-note"], [loadAudit, "mqtt-note"]]) {
      try { await f(); } catch (e) { document.getElementById(note).textContent = e.message; }
    }
  }
  loadAll();
})();
