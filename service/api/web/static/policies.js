// The operator page's policy section: versions with their stored backtests (the latest, and all on demand), create,
// backtest, activate, roll back.
"use strict";

const Policies = (() => {
  const { el, clear } = LA;
  const HISTORY_PAGE = 10;

  function figures(f) {
    return `${f.items} items · auto ${LA.pct(f.auto_rate)} · precision ${LA.pct(f.auto_precision)} `
      + `[${LA.pct(f.auto_precision_ci[0])}, ${LA.pct(f.auto_precision_ci[1])}] · reviews ${f.human_reviews}`;
  }

  function ran(b) {
    return `#${b.id} · ${new Date(b.created_at).toLocaleString()} · ${b.requested_by} · `
      + `${b.ground_truth} ground-truth items available`;
  }

  // A version's stored backtests, newest first, a page at a time (read when the list is first opened).
  function history(ctx, base, version) {
    const list = el("ol", { class: "backtest-list" });
    const more = el("button", { type: "button", class: "older-btn", hidden: true }, "Older");
    let before = null;
    let loaded = false;
    async function load() {
      more.disabled = true;
      try {
        const query = `limit=${HISTORY_PAGE}${before === null ? "" : `&before=${before}`}`;
        const page = await ctx.session.call("GET", `${base}/${version}/backtests?${query}`);
        list.append(...page.backtests.map((b) => el("li", { class: "backtest-entry", "data-backtest": b.id },
          el("div", {}, `v${b.candidate.policy_version}: `, figures(b.candidate)),
          el("div", { class: "muted" }, `active v${b.active.policy_version}: `, figures(b.active)),
          el("div", { class: "muted" }, ran(b)))));
        before = page.next_before;
        more.hidden = before === null;
      } catch (err) {
        ctx.say(`Backtests of v${version}: ${err.message}`, "error");
      } finally {
        more.disabled = false;
      }
    }
    more.addEventListener("click", load);
    const box = el("details", { class: "backtest-history", "data-version": version },
      el("summary", {}, "All backtests"), list, more);
    box.addEventListener("toggle", () => {
      if (box.open && !loaded) {
        loaded = true;
        load();
      }
    });
    return box;
  }

  // The version's latest stored backtest (from the version list), and its earlier ones on demand.
  function backtestCell(ctx, base, v) {
    const b = v.latest_backtest;
    if (!b) return el("span", { class: "muted" }, "not backtested");
    return el("div", {},
      el("div", { class: "backtest", "data-version": v.version, "data-backtest": b.id },
        el("div", {}, el("strong", {}, `v${b.candidate.policy_version}: `), figures(b.candidate)),
        el("div", { class: "muted" }, `active v${b.active.policy_version}: `, figures(b.active)),
        el("div", { class: "muted" }, ran(b))),
      history(ctx, base, v.version));
  }

  function editable(policy) {
    const copy = { ...policy };
    delete copy.version;
    return JSON.stringify(copy, null, 2);
  }

  // ctx: {session, project, refresh(), say(text, kind)}
  async function render(box, ctx) {
    const base = `/projects/${encodeURIComponent(ctx.project)}/policies`;
    let versions;
    try {
      versions = await ctx.session.call("GET", base);
    } catch (err) {
      clear(box, el("p", { class: "notice error" }, err.message));
      return;
    }
    const active = versions.find((v) => v.active);
    const run = (label, fn) => async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        await fn();
      } catch (err) {
        ctx.say(`${label}: ${err.message}`, "error");
      } finally {
        button.disabled = false;
      }
    };
    const reason = el("input", { id: "policy-reason", placeholder: "Reason (kept in the audit log)", size: 40 });
    const rows = versions.slice().reverse().map((v) => el("tr", { "data-version": v.version },
      el("td", {}, `v${v.version} `, v.active ? el("span", { class: "badge active-badge" }, "active") : null),
      el("td", {}, new Date(v.created_at).toLocaleString()),
      el("td", {}, backtestCell(ctx, base, v)),
      el("td", {}, el("div", { class: "row-actions" },
        el("button", { type: "button", class: "backtest-btn", "data-version": v.version,
                       onclick: run("Backtest", async () => {
                         ctx.say(`Backtesting v${v.version}…`);
                         const b = await ctx.session.call("POST", `${base}/${v.version}/backtest`, { limit: 2000 });
                         ctx.say(`Backtest #${b.id} of v${v.version} done.`);
                         await ctx.refresh();  // the version list shows it; the audit log has its entry
                       }) }, "Backtest"),
        v.active ? null : el("button", { type: "button", class: "activate-btn primary", "data-version": v.version,
                                         onclick: run("Activate", async () => {
                                           await ctx.session.call("POST", `${base}/${v.version}/activate`,
                                                                  { reason: reason.value });
                                           ctx.say(`v${v.version} is now active.`);
                                           await ctx.refresh();
                                         }) }, "Activate")))));
    const text = el("textarea", { id: "policy-text", spellcheck: "false", "aria-label": "New policy (JSON or YAML)" },
      active ? editable(active.policy) : "");
    const create = el("button", { id: "create-policy", type: "button", class: "primary",
                                  onclick: run("Create", async () => {
                                    const made = await ctx.session.call("POST", base,
                                      { policy: text.value, activate: false, reason: reason.value });
                                    ctx.say(`Created v${made.version} (not active yet: backtest it, then activate).`);
                                    await render(box, ctx);
                                  }) }, "Create version");
    const rollback = el("button", { id: "rollback", type: "button", class: "danger",
                                    onclick: run("Roll back", async () => {
                                      const r = await ctx.session.call("POST", `${base}/rollback`, { reason: reason.value });
                                      ctx.say(`Rolled back: v${r.active_version} is active again.`);
                                      await ctx.refresh();
                                    }) }, "Roll back");
    clear(box,
      el("div", { class: "toolbar" }, reason, rollback),
      el("table", { id: "policies", class: "grid" },
        el("thead", {}, el("tr", {}, ["Version", "Created", "Backtest", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows)),
      el("details", { id: "new-policy" }, el("summary", {}, "New version (edit the active one)"),
        el("p", { class: "muted" }, "JSON or YAML; the version number is assigned."), text, create));
  }

  return { render };
})();
