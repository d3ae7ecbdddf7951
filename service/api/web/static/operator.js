// The operator dashboard: per project, the metrics, two plots (realized precision over time; precision versus
// coverage with the threshold), each tool's value and cost, the items the agent failed on (re-queue them), policy
// versions, and the audit log.
"use strict";

(() => {
  const { el, clear, $ } = LA;
  const session = new LA.Session("operator");
  const REFRESH_MS = 15000;
  const DEMO_REFRESH_MS = 3000; // while `labelagent demo` runs: the stream moves every second
  const AUDIT_SHOWN = 50;
  const FAILED_SHOWN = 50;
  let project = null;
  let timer = null;
  let period = REFRESH_MS;

  const api = (path) => session.call("GET", `/projects/${encodeURIComponent(project)}${path}`);

  function say(text, kind = "info") {
    clear($("#notice"), text ? el("p", { class: `notice ${kind}`, role: "status" }, text) : null);
  }

  function showSignIn() {
    clearInterval(timer);
    clear($("#app"), el("h1", {}, "Operator"), LA.signInForm(session, { onSignedIn: showDashboard }));
    $("#api-key").focus();
  }

  function showDashboard(projects) {
    if (!projects.length) {
      clear($("#app"), el("p", { class: "notice error" }, "This key sees no project."));
      return;
    }
    const picker = LA.projectPicker(projects, session, (p) => { project = p; refresh(); });
    clear($("#app"),
      el("div", { class: "toolbar" }, el("label", {}, "Project ", picker),
        el("button", { type: "button", id: "refresh", onclick: () => refresh() }, "Refresh"),
        el("span", { id: "updated", class: "muted" }),
        el("button", { type: "button", id: "sign-out", onclick: () => { session.key = null; showSignIn(); } }, "Sign out")),
      el("div", { id: "demo" }),
      el("div", { id: "notice" }),
      el("div", { id: "tiles", class: "tiles" }),
      el("div", { class: "plots" },
        el("section", { class: "card" }, el("h2", {}, "Realized precision (audits)"), el("div", { id: "precision-plot" })),
        el("section", { class: "card" }, el("h2", {}, "Precision versus coverage (calibration)"),
          el("div", { id: "calibration-plot" }))),
      el("section", { class: "card" }, el("h2", {}, "Tools: value and cost"), el("div", { id: "tools" })),
      el("section", { class: "card" }, el("h2", {}, "Failed items"), el("div", { id: "failed" })),
      el("section", { class: "card" }, el("h2", {}, "Policy versions"), el("div", { id: "policy-box" })),
      el("section", { class: "card" }, el("h2", {}, "Audit log"), el("div", { id: "audit" })));
    project = picker.value;
    refresh();
    every(REFRESH_MS);
  }

  function every(ms) {
    clearInterval(timer);
    period = ms;
    timer = setInterval(refreshMetrics, ms);
  }

  async function refresh() {
    await Promise.all([refreshMetrics(), Policies.render($("#policy-box"), { session, project, refresh, say })]);
  }

  async function refreshMetrics() {
    try {
      const [m, calibration, precision, tools, audit, failed] = await Promise.all([
        api("/metrics"), api("/metrics/calibration"), api("/metrics/precision"), api("/metrics/tools"), auditTail(),
        api(`/items?status=failed&limit=${FAILED_SHOWN}`)]);
      tiles(m);
      const demo = await LA.showDemo($("#demo"), session, project);
      const wanted = demo && demo.running ? DEMO_REFRESH_MS : REFRESH_MS;
      if (wanted !== period) every(wanted);
      clear($("#precision-plot"), precisionPlot(precision, calibration.target_precision),
        legend(precisionCaption(precision), ["line", "realized precision"], ["band", `${LA.pct(precision.level, 0)} interval`],
               ["target", "target"]));
      clear($("#calibration-plot"), calibrationPlot(calibration),
        legend(calibration.threshold === null ? "No auto label yet: no threshold." :
                 `Red: the current threshold ${LA.num(calibration.threshold, 3)}.`,
               ["line", "precision"], ["low", `lower bound (delta ${+calibration.delta.toFixed(4)})`], ["target", "target"]),
        calibration.critical.map(criticalNote));
      clear($("#tools"), toolTable(tools));
      clear($("#failed"), failedTable(failed));
      clear($("#audit"), auditTable(audit));
      $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err.status === 401) { session.key = null; showSignIn(); return; }
      say(err.message, "error");
    }
  }

  function legend(caption, ...keys) {
    return el("p", { class: "legend muted" }, keys.map(([cls, text]) => el("span", {}, el("i", { class: `key ${cls}` }), text)),
      " ", caption);
  }

  function criticalNote(c) {
    return el("p", { class: "muted critical-label" },
      `Critical label ${c.label}: ${c.records} calibration items, ${c.above_threshold} at or above the threshold ` +
      `(${c.errors_above} wrong); a threshold needs at least ${c.needed} of them above it, error-free.`);
  }

  function precisionCaption(h) {
    if (!h.points.length) return "";
    const when = (p) => new Date(p.at).toLocaleString();
    return `Cumulative, ${when(h.points[0])} to ${when(h.points[h.points.length - 1])}.`;
  }

  function tile(id, title, value, sub) {
    return el("div", { class: "tile", id }, el("div", { class: "muted" }, title), el("div", { class: "value" }, value),
      el("div", { class: "sub" }, sub));
  }

  function tiles(m) {
    const p = m.precision;
    clear($("#tiles"),
      tile("tile-active", "Active policy", m.active_version === null ? "–" : `v${m.active_version}`,
        `threshold ${m.threshold === null ? "none yet" : LA.num(m.threshold, 3)}`),
      tile("tile-throughput", "Labeled / hour", m.throughput.labeled_last_hour,
        `${m.throughput.labeled_last_minute} last minute · ${m.throughput.ingested_last_hour} ingested / hour`),
      tile("tile-queue", "Review queue", m.queue.depth,
        `${m.queue.open} open · ${m.queue.claimed} claimed · oldest ${LA.duration(m.queue.oldest_age_seconds)}` +
        ` · ${m.queue.taken_over} taken over by the agent`),
      tile("tile-auto", "Auto rate", LA.pct(m.auto_rate), `${m.labels.agent} agent · ${m.labels.human} human labels`),
      tile("tile-precision", "Realized precision", LA.pct(p.estimate),
        `${p.correct}/${p.audits} audits · ${LA.pct(p.level, 0)} CI [${LA.pct(p.ci_low)}, ${LA.pct(p.ci_high)}]`),
      tile("tile-corrections", "Corrections", (m.corrections.agent || 0) + (m.corrections.human || 0),
        `${m.corrections.agent || 0} of auto labels · ${m.corrections.human || 0} of human labels`),
      toolFailures(m.tool_failures || {}));
  }

  // Shown only once a tool's call failed: while a cheap voting tool is down its items go to review.
  function toolFailures(failures) {
    const tools = Object.entries(failures);
    if (!tools.length) return null;
    return tile("tile-tool-failures", "Tool failures", tools.reduce((sum, [, n]) => sum + n, 0),
      `graph runs · ${tools.map(([t, n]) => `${t} ${n}`).join(" · ")} · see the audit log`);
  }

  function precisionPlot(h, target) {
    const pts = h.points;
    const lo = Math.min(target, ...pts.map((p) => p.ci_low), 1) - 0.02;
    return Plot.lineChart({
      id: "precision-chart", title: "Realized precision over audits with its interval",
      xDomain: [0, Math.max(1, ...pts.map((p) => p.audits))], yDomain: [Math.max(0, Math.floor(lo * 20) / 20), 1],
      xLabel: "audits settled", yLabel: "precision", xFormat: (x) => x.toFixed(0), yFormat: (y) => y.toFixed(2),
      series: [{ points: pts.map((p) => [p.audits, p.estimate]), name: "realized precision" }],
      band: pts.map((p) => [p.audits, p.ci_low, p.ci_high]),
      hlines: [{ y: target, label: `target ${target}` }],
      empty: "no audits settled yet",
    });
  }

  function calibrationPlot(c) {
    const pts = c.points;
    let marked = null;
    if (c.threshold !== null) {
      for (const p of pts) if (p.threshold >= c.threshold) marked = p; // highest coverage still at/above it
    }
    const lo = Math.min(c.target_precision, ...pts.map((p) => p.precision_low), 1) - 0.02;
    return Plot.lineChart({
      id: "calibration-chart", title: "Precision versus coverage on the calibration sample",
      xDomain: [0, 1], yDomain: [Math.max(0, Math.floor(lo * 20) / 20), 1],
      xLabel: `coverage (${c.records} calibration items)`, yLabel: "precision",
      series: [{ points: pts.map((p) => [p.coverage, p.precision]), name: "precision" },
               { points: pts.map((p) => [p.coverage, p.precision_low]), cls: "low",
                 name: `lower bound at 1 - delta (${c.delta})` }],
      hlines: [{ y: c.target_precision, label: `target ${c.target_precision}` }],
      vlines: marked ? [{ x: marked.coverage, label: `threshold ${LA.num(c.threshold, 3)}` }] : [],
      dots: marked ? [{ x: marked.coverage, y: marked.precision,
                        title: `threshold ${LA.num(c.threshold, 3)}: coverage ${LA.pct(marked.coverage)}, `
                          + `precision ${LA.pct(marked.precision)}` }] : [],
      empty: "no calibration items yet",
    });
  }

  function toolTable(report) {
    const maxWeight = Math.max(0.001, ...report.tools.map((t) => t.weight || 0));
    return el("div", {},
      el("table", { id: "tools-table", class: "grid" },
        el("thead", {}, el("tr", {}, ["Tool", "Calls", "Abstained", "Cost", "Accuracy", "Weight", ""].map(
          (h, i) => el("th", { class: i && i < 6 ? "num" : "" }, h)))),
        el("tbody", {}, report.tools.map((t) => el("tr", { "data-tool": t.tool },
          el("td", {}, t.tool), el("td", { class: "num" }, t.votes), el("td", { class: "num" }, t.abstains),
          el("td", { class: "num" }, LA.num(t.cost, 2)), el("td", { class: "num" }, LA.pct(t.accuracy)),
          el("td", { class: "num" }, LA.num(t.weight, 2)),
          el("td", {}, t.weight === null ? null
            : bar(t.weight / maxWeight, `weight ${LA.num(t.weight, 2)}`)))))),
      el("p", { class: "muted" }, `Accuracy and weight over ${report.ground_truth} recent ground-truth items.`));
  }

  // CSP forbids style attributes in markup, not styles set through the CSSOM.
  function bar(share, title) {
    const node = el("span", { class: "bar", title });
    node.style.width = `${Math.round(120 * share)}px`;
    return node;
  }

  function failedTable(page) {
    if (!page.items.length) return el("p", { class: "muted", id: "no-failed" }, "No failed items.");
    const more = page.next_after === null ? "" : ` (the first ${FAILED_SHOWN} shown)`;
    const requeue = el("button", { type: "button", id: "requeue-failed", onclick: async () => {
      requeue.disabled = true;
      try {
        const r = await session.call("POST", `/projects/${encodeURIComponent(project)}/items/requeue`, {});
        say(`Re-queued ${r.requeued.length} failed item${r.requeued.length === 1 ? "" : "s"}.`);
        await refreshMetrics();
      } catch (err) {
        say(err.message, "error");
        requeue.disabled = false;
      }
    } }, "Re-queue all failed items");
    return el("div", {},
      el("table", { id: "failed-table", class: "grid" },
        el("thead", {}, el("tr", {}, ["Item", "Failed", "Why"].map((h) => el("th", {}, h)))),
        el("tbody", {}, page.items.map((it) => el("tr", { "data-item": it.external_id },
          el("td", {}, it.external_id), el("td", {}, new Date(it.updated_at).toLocaleString()),
          el("td", { class: "detail-json" }, it.error || "–"))))),
      el("div", { class: "toolbar" }, requeue,
        el("span", { class: "muted" }, `${page.items.length} failed${more}; re-queued items go back to the workers.`)));
  }

  async function auditTail() {
    let after = 0;
    let events = [];
    for (let page = 0; page < 50; page++) {
      const r = await api(`/audit?after=${after}&limit=1000`);
      events = events.concat(r.events).slice(-AUDIT_SHOWN);
      if (r.next_after === null) break;
      after = r.next_after;
    }
    return events.reverse();
  }

  function auditTable(events) {
    if (!events.length) return el("p", { class: "muted" }, "No changes yet.");
    return el("table", { id: "audit-table", class: "grid" },
      el("thead", {}, el("tr", {}, ["#", "When", "Action", "Who", "Detail"].map((h) => el("th", {}, h)))),
      el("tbody", {}, events.map((e) => el("tr", { "data-action": e.action },
        el("td", {}, e.id), el("td", {}, new Date(e.created_at).toLocaleString()), el("td", {}, e.action),
        el("td", {}, e.actor), el("td", { class: "detail-json" }, JSON.stringify(e.detail))))));
  }

  async function boot() {
    if (!session.key) return showSignIn();
    try {
      showDashboard(await session.call("GET", "/projects"));
    } catch {
      session.key = null;
      showSignIn();
    }
  }

  boot();
})();
