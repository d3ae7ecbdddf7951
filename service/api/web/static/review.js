// The reviewer page: sign in, pick a project, claim -> answer -> claim the next, from the keyboard.
// Keys: 1-9 and 0 choose a label, Enter submits, s skips, / filters (more than 10 labels), r checks an empty queue.
"use strict";

(() => {
  const { el, clear, $ } = LA;
  const session = new LA.Session("review");
  const EMPTY_RECHECK_MS = 15000;
  const DEMO_REFRESH_MS = 5000;
  let demoTimer = null;
  const state = { project: null, task: null, selected: null, filter: "", busy: false, skew: 0, leaseMs: 0,
                  expiresAt: 0, heartbeatAt: 0, timers: [], thumbUrl: null };

  const app = () => $("#app");
  const reviewer = () => session.get("reviewer") || "reviewer";

  function stopTimers() {
    state.timers.forEach((t) => clearInterval(t));
    state.timers = [];
  }

  function notice(text, kind = "info") {
    clear($("#notice"), text ? el("p", { class: `notice ${kind}`, role: "status" }, text) : null);
  }

  // --- sign in and the workspace -----------------------------------------------------------------------------
  function showSignIn() {
    stopTimers();
    clearInterval(demoTimer);
    const name = el("input", { id: "reviewer-name", autocomplete: "off", value: reviewer(), required: true,
                               "aria-label": "Your name" });
    clear(app(), el("h1", {}, "Review"), LA.signInForm(session, {
      extra: [{ node: el("label", {}, "Your name ", name), save: () => session.set("reviewer", name.value.trim()) }],
      onSignedIn: showWorkspace,
    }));
    $("#api-key").focus();
  }

  function showWorkspace(projects) {
    if (!projects.length) {
      clear(app(), el("p", { class: "notice error" }, "This key sees no project."));
      return;
    }
    const picker = LA.projectPicker(projects, session, (p) => start(p));
    const signOut = el("button", { id: "sign-out", type: "button", onclick: () => { release(); session.key = null; showSignIn(); } },
      "Sign out");
    clear(app(),
      el("div", { class: "toolbar" }, el("label", {}, "Project ", picker),
        el("span", { class: "muted" }, `as ${reviewer()}`), el("span", { id: "lease", class: "lease" }), signOut),
      el("div", { id: "demo" }), el("div", { id: "notice" }), el("div", { id: "task" }));
    start(picker.value);
  }

  function start(project) {
    release();
    state.project = project;
    session.set("project", project);
    showDemo();
    claimNext();
  }

  // The banner of `labelagent demo`, kept current while it runs.
  async function showDemo() {
    clearInterval(demoTimer);
    const demo = await LA.showDemo($("#demo"), session, state.project);
    if (demo && demo.running) demoTimer = setInterval(() => LA.showDemo($("#demo"), session, state.project), DEMO_REFRESH_MS);
  }

  // --- claiming ----------------------------------------------------------------------------------------------
  async function claimNext() {
    stopTimers();
    state.task = null;
    state.selected = null;
    state.filter = "";
    clear($("#lease"));
    clear($("#task"), el("p", { class: "muted" }, "Loading the next task…"));
    let result;
    try {
      result = await session.call("POST", `/projects/${encodeURIComponent(state.project)}/reviews/claim`,
                                  { reviewer: reviewer() }, { withDate: true });
    } catch (err) {
      return showError(err);
    }
    if (result.data === null) return showEmpty();
    const task = result.data;
    const serverNow = result.date ? Date.parse(result.date) : Date.now();
    state.skew = serverNow - Date.now();
    state.expiresAt = Date.parse(task.lease_expires_at);
    state.leaseMs = Math.max(1000, state.expiresAt - serverNow);
    state.task = task;
    renderTask(task);
    startLeaseClock();
  }

  function showEmpty() {
    clear($("#task"), el("div", { id: "empty", class: "card" },
      el("h2", {}, "The queue is empty"),
      el("p", {}, `Nothing to review in ${state.project} right now. Checking again every ${EMPTY_RECHECK_MS / 1000} s; `,
        "press ", el("kbd", {}, "r"), " to check now."),
      el("button", { type: "button", id: "check-again", onclick: claimNext }, "Check now")));
    state.timers.push(setInterval(claimNext, EMPTY_RECHECK_MS));
  }

  function showError(err) {
    if (err.status === 401) {
      session.key = null;
      return showSignIn();
    }
    clear($("#task"), el("div", { class: "card" }, el("p", { class: "notice error", role: "alert" }, err.message),
      el("button", { type: "button", onclick: claimNext }, "Try again")));
  }

  // --- the task ----------------------------------------------------------------------------------------------
  function visibleLabels() {
    const f = state.filter.toLowerCase();
    return state.task.labels.filter((l) => l.toLowerCase().includes(f));
  }

  function keyOf(i) {
    return i < 9 ? String(i + 1) : i === 9 ? "0" : null;
  }

  function renderLabels() {
    const list = visibleLabels();
    if (state.selected !== null && !list.includes(state.selected)) state.selected = null;
    clear($("#labels"), list.map((label, i) => el("li", {},
      el("button", { type: "button", class: `label${label === state.selected ? " selected" : ""}`,
                     "data-label": label, "aria-pressed": String(label === state.selected),
                     onclick: () => choose(label) },
        keyOf(i) ? el("kbd", {}, keyOf(i)) : null, " ", label))));
  }

  function choose(label) {
    state.selected = label;
    renderLabels();
  }

  function renderTask(task) {
    const thumb = el("div", { id: "thumbnail-box" });
    const many = task.labels.length > 10;
    const filter = many ? el("input", { id: "label-filter", type: "search", autocomplete: "off",
                                        placeholder: "Type to filter labels, Enter to submit", "aria-label": "Filter labels" })
      : null;
    if (filter) {
      filter.addEventListener("input", () => { state.filter = filter.value; renderLabels(); });
      filter.addEventListener("keydown", onFilterKey);
    }
    const root = el("div", { id: "task-view", "data-task-id": task.task_id, "data-kind": task.kind },
      el("div", { class: "task-head" },
        el("span", { id: "task-kind", class: `badge kind-${task.kind}` }, task.kind.replace("_", " ")),
        el("span", { class: "muted" }, ` task ${task.task_id} · policy v${task.policy_version} · answers `
          + `${task.answers}/${task.answers_needed}`)),
      el("div", { class: "columns" },
        el("div", { class: "main-col" }, Evidence.item(task, thumb)),
        el("div", { class: "side-col" },
          el("section", { id: "answer", class: "card" }, el("h3", {}, "Your label"),
            filter, el("ul", { id: "labels", class: "labels" }),
            el("div", { class: "actions" },
              el("button", { id: "submit", type: "button", class: "primary", onclick: submit }, "Submit ",
                 el("kbd", {}, "Enter")),
              el("button", { id: "skip", type: "button", onclick: skip }, "Skip ", el("kbd", {}, "s")))),
          Evidence.agent(task))));
    clear($("#task"), root);
    renderLabels();
    const thumbnail = task.item.thumbnail_url || task.thumbnail_url; // a path of this app: fetched with the key
    if (thumbnail) loadThumbnail(thumbnail, thumb);
  }

  async function loadThumbnail(url, box) {
    try {
      const blob = await session.blob(url);
      if (state.thumbUrl) URL.revokeObjectURL(state.thumbUrl);
      state.thumbUrl = URL.createObjectURL(blob);
      clear(box, el("img", { id: "thumbnail", src: state.thumbUrl, alt: "item thumbnail" }));
    } catch (err) {
      clear(box, el("p", { class: "muted" }, `thumbnail unavailable (${err.message})`));
    }
  }

  // --- lease: a countdown, and heartbeats when a third of the lease is left -------------------------------------
  function startLeaseClock() {
    state.heartbeatAt = state.expiresAt - state.leaseMs / 3;
    tick();
    state.timers.push(setInterval(tick, 1000));
  }

  function tick() {
    const now = Date.now() + state.skew;
    const left = (state.expiresAt - now) / 1000;
    const lease = $("#lease");
    if (lease) lease.textContent = `lease ${LA.duration(left)} left`;
    if (lease) lease.dataset.expires = String(state.expiresAt);
    if (lease) lease.classList.toggle("low", left < 30);
    if (state.task && now >= state.heartbeatAt && !state.beating) heartbeat();
  }

  async function heartbeat() {
    const task = state.task;
    state.beating = true;
    try {
      const r = await session.call("POST", `/reviews/${task.task_id}/heartbeat`, { lease_token: task.lease_token });
      if (state.task !== task) return;
      state.expiresAt = Date.parse(r.lease_expires_at);
      state.heartbeatAt = state.expiresAt - state.leaseMs / 3;
    } catch (err) {
      if (state.task === task) leaseLost(err, task);
    } finally {
      state.beating = false;
    }
  }

  function leaseLost(err, task) {
    if (err.status === 409 || err.status === 404) {
      notice(`Lease lost on task ${task.task_id} (it expired or another reviewer has it): your answer was not `
        + "saved. Here is the next task.", "error");
      claimNext();
    } else {
      notice(err.message, "error");
    }
  }

  // --- answers -----------------------------------------------------------------------------------------------
  async function act(verb, body, done) {
    const task = state.task;
    if (!task || state.busy) return;
    state.busy = true;
    try {
      await session.call("POST", `/reviews/${task.task_id}/${verb}`, { lease_token: task.lease_token, ...body });
      done(task);
      await claimNext();
    } catch (err) {
      leaseLost(err, task);
    } finally {
      state.busy = false;
    }
  }

  function submit() {
    if (!state.task) return;
    if (state.selected === null) {
      notice("Choose a label first: press its number (or click it).", "error");
      return;
    }
    const label = state.selected;
    act("submit", { label }, (task) => {
      notice(`Saved "${label}" for ${task.item.external_id}.`);
      if (demoTimer) showDemo();  // the demo banner counts answers by people: show this one now, not at its next tick
    });
  }

  function skip() {
    act("skip", {}, (task) => notice(`Skipped ${task.item.external_id}: it will not come back to you for 15 min.`));
  }

  function release() {
    const task = state.task;
    state.task = null;
    if (task && session.key) {
      session.call("POST", `/reviews/${task.task_id}/release`, { lease_token: task.lease_token }, { keepalive: true })
        .catch(() => {});
    }
  }

  // --- keyboard ----------------------------------------------------------------------------------------------
  function onFilterKey(event) {
    if (event.key === "Enter") {
      event.preventDefault();
      const list = visibleLabels();
      if (state.selected === null && list.length) state.selected = list[0];
      submit();
    } else if (event.key === "Escape") {
      event.target.blur();
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const list = visibleLabels();
      const i = list.indexOf(state.selected) + (event.key === "ArrowDown" ? 1 : -1);
      if (list.length) choose(list[(i + list.length) % list.length]);
    }
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement
        || target instanceof HTMLSelectElement) return;
    if (event.key === "r" && !state.task && $("#empty")) {
      event.preventDefault();
      claimNext();
      return;
    }
    if (!state.task) return;
    if (/^[0-9]$/.test(event.key)) {
      const i = event.key === "0" ? 9 : Number(event.key) - 1;
      const list = visibleLabels();
      if (i < list.length) choose(list[i]);
      event.preventDefault();
    } else if (event.key === "Enter") {
      event.preventDefault();
      submit();
    } else if (event.key === "s") {
      event.preventDefault();
      skip();
    } else if (event.key === "/" && $("#label-filter")) {
      event.preventDefault();
      $("#label-filter").focus();
    }
  });

  window.addEventListener("pagehide", release);

  async function boot() {
    if (!session.key) return showSignIn();
    try {
      showWorkspace(await session.call("GET", "/projects"));
    } catch {
      session.key = null;
      showSignIn();
    }
  }

  boot();
})();
