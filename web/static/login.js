// Sign-in: posts the form to the API, which sets the session cookie.
(function () {
  "use strict";
  const form = document.getElementById("login");
  const error = document.getElementById("error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body = JSON.stringify({
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    });
    try {
      const res = await fetch("/api/v1/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body,
        credentials: "same-origin",
      });
      if (!res.ok) {
        const j = await res.json().catch(() => ({}));
        error.textContent = j.error || "sign-in failed (" + res.status + ")";
        return;
      }
      window.location.assign("/");
    } catch (e) {
      error.textContent = "the server cannot be reached: " + e.message;
    }
  });
})();
