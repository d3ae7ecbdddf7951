// Shared by both pages: DOM building (text only, never HTML), the API key in sessionStorage, and API calls.
"use strict";

const LA = (() => {
  // el("div", {class: "x", onclick: f}, child, "text", ...): children are nodes or strings (set as text).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  const $ = (selector) => document.querySelector(selector);

  function pct(x, digits = 1) {
    return x === null || x === undefined ? "–" : `${(100 * x).toFixed(digits)} %`;
  }

  function num(x, digits = 2) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The key lives in sessionStorage under a per-page name: closing the tab forgets it.
  class Session {
    constructor(name) {
      this.name = `labelagent.${name}`;
    }
    get key() { return sessionStorage.getItem(`${this.name}.key`); }
    set key(v) { v ? sessionStorage.setItem(`${this.name}.key`, v) : sessionStorage.removeItem(`${this.name}.key`); }
    get(field) { return sessionStorage.getItem(`${this.name}.${field}`); }
    set(field, v) { sessionStorage.setItem(`${this.name}.${field}`, v); }

    // JSON (or null for 204); throws ApiError with the server's message on any other status.
    async call(method, path, body, options = {}) {
      const headers = { "X-API-Key": this.key || "" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let response;
      try {
        response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                        keepalive: Boolean(options.keepalive) });
      } catch (err) {
        throw new ApiError(0, `the server does not answer (${err.message})`);
      }
      if (response.status === 204) return options.withDate ? { data: null, date: response.headers.get("Date") } : null;
      const text = await response.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch { data = null; }
      if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, data, text));
      if (options.withDate) return { data, date: response.headers.get("Date") };
      return data;
    }

    async blob(path) {
      const response = await fetch(path, { headers: { "X-API-Key": this.key || "" } });
      if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`);
      return response.blob();
    }
  }

  function errorMessage(status, data, text) {
    if (data && data.error && data.error.message) return data.error.message;
    if (data && Array.isArray(data.detail)) return data.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    return `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ""}`;
  }

  // A sign-in form: key (and extra fields) -> check it with GET /projects -> onSignedIn(projects).
  function signInForm(session, { extra = [], onSignedIn }) {
    const key = el("input", { id: "api-key", type: "password", autocomplete: "off", placeholder: "la_…",
                              "aria-label": "API key", required: true });
    const status = el("p", { class: "form-error", role: "alert" });
    const form = el("form", { id: "sign-in", class: "card" },
      el("label", {}, "API key ", key), ...extra.map((f) => f.node), el("button", { type: "submit" }, "Sign in"),
      status);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      session.key = key.value.trim();
      try {
        for (const f of extra) f.save();
        const projects = await session.call("GET", "/projects");
        onSignedIn(projects);
      } catch (err) {
        session.key = null;
        status.textContent = err.status === 401 ? "This key is unknown or revoked." : err.message;
      }
    });
    return form;
  }

  function projectPicker(projects, session, onPick) {
    const select = el("select", { id: "project", "aria-label": "Project" },
      projects.map((p) => el("option", { value: p.name }, p.name)));
    const saved = session.get("project");
    if (saved && projects.some((p) => p.name === saved)) select.value = saved;
    select.addEventListener("change", () => { session.set("project", select.value); onPick(select.value); });
    return select;
  }

  // The banner of `labelagent demo` (what is simulated, and a switch for the simulated reviewers) in `container`;
  // empty outside a demo. Resolves to the demo's status.
  async function showDemo(container, session, project) {
    const path = `/projects/${encodeURIComponent(project)}/demo`;
    let d;
    try {
      d = await session.call("GET", path);
    } catch (err) {
      clear(container, el("p", { class: "notice error" }, `Demo status: ${err.message}`));
      return null;
    }
    if (!d.running) {
      clear(container);
      return d;
    }
    const toggle = el("button", { type: "button", id: "demo-reviewer-toggle", class: "primary" },
      d.reviewer_paused ? "Resume the simulated reviewers" : "Pause the simulated reviewers (take over)");
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      try {
        await session.call("POST", `${path}/reviewer`, { paused: !d.reviewer_paused });
      } catch (err) {
        clear(container, el("p", { class: "notice error" }, err.message));
        return;
      }
      await showDemo(container, session, project);
    });
    const who = d.reviewer_paused
      ? "The simulated reviewers are paused: the review queue is yours (answers under your name are human ground truth)."
      : `Review tasks are answered by simulated reviewers (${d.reviewer}-1, -2, …) from the dataset's labels ` +
        `${d.review_delay_seconds} s after they claim them.`;
    clear(container, el("div", { id: "demo-banner", class: "demo-banner", role: "note",
                                 "data-paused": String(d.reviewer_paused) },
      el("p", {}, el("strong", {}, "Simulation · labelagent demo. "),
        `${d.position} of ${d.total} messages streamed (${d.rate_per_second}/s) from the ${d.dataset}. ${who} `,
        `Answers so far: ${d.simulated_answers} simulated, ${d.human_answers} by people`,
        d.human_answers ? ` (${Object.entries(d.answers_by_reviewer).filter(([name]) => !name.startsWith(d.reviewer))
          .map(([name, n]) => `${name} ${n}`).join(", ")}).` : "."),
      toggle));
    return d;
  }

  return { el, clear, $, pct, num, duration, ApiError, Session, signInForm, projectPicker, showDemo };
})();
