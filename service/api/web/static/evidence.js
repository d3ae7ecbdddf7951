// The reviewer page's view of an item: text, thumbnail, metadata (weather apart), the agent's votes and the
// nearest labeled examples the retrieval tool quoted. Text only: nothing from the item is parsed as HTML.
"use strict";

const Evidence = (() => {
  const { el } = LA;

  function value(v) {
    return v !== null && typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function table(id, rows) {
    return el("table", { id, class: "kv" }, el("tbody", {},
      rows.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, value(v))))));
  }

  // Weather values: wx_* keys written by the weather tool (or a nested "weather" object) go in their own table.
  function metadata(meta) {
    const entries = Object.entries(meta || {});
    const weather = entries.filter(([k]) => k.startsWith("wx_") || k === "weather");
    const rest = entries.filter(([k]) => !(k.startsWith("wx_") || k === "weather"));
    const out = [];
    if (weather.length) out.push(el("section", { class: "weather" }, el("h3", {}, "Weather"), table("weather", weather)));
    if (rest.length) out.push(el("section", {}, el("h3", {}, "Metadata"), table("metadata", rest)));
    return out;
  }

  function topVote(distribution) {
    if (!distribution) return null;
    let best = null;
    for (const [label, p] of Object.entries(distribution)) if (best === null || p > best[1]) best = [label, p];
    return best;
  }

  // The retrieval tool's evidence: "<version>: <label> <p> from N neighbours; <key> <label> <sim> "<snippet>" | ..."
  const NEIGHBOURS = /from \d+ neighbours?; (.*)$/s;
  const NEIGHBOUR = /^(\S+) (\S+) (\d+(?:\.\d+)?) "(.*)"$/s;

  function neighbours(evidenceText) {
    const match = NEIGHBOURS.exec(evidenceText || "");
    if (!match) return [];
    const out = [];
    for (const part of match[1].split(" | ")) {
      const m = NEIGHBOUR.exec(part.trim());
      if (m) out.push({ key: m[1], label: m[2], similarity: Number(m[3]), snippet: m[4] });
    }
    return out;
  }

  function votes(evidence) {
    const rows = evidence.map((v) => {
      const top = topVote(v.distribution);
      return el("tr", { class: top ? "" : "abstained" },
        el("td", {}, v.tool),
        el("td", {}, top ? `${top[0]} ${(100 * top[1]).toFixed(0)} %` : "abstained"),
        el("td", { class: "num" }, LA.num(v.cost, 3)),
        el("td", { class: "evidence-text" }, v.evidence));
    });
    return el("table", { id: "votes", class: "grid" },
      el("thead", {}, el("tr", {}, ["Tool", "Vote", "Cost", "Evidence"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
  }

  function nearest(evidence) {
    const found = evidence.flatMap((v) => neighbours(v.evidence).map((n) => ({ ...n, tool: v.tool })));
    if (!found.length) return null;
    return el("section", { id: "neighbours" }, el("h3", {}, "Nearest labeled examples"),
      el("ol", {}, found.map((n) => el("li", {},
        el("span", { class: "badge" }, n.label), ` ${n.similarity.toFixed(2)} `,
        el("q", {}, n.snippet), el("span", { class: "muted" }, ` ${n.key} (${n.tool})`)))));
  }

  // The agent's view, or why it is hidden (audits and cold start: those answers calibrate the agent).
  function agent(task) {
    if (task.kind === "cold_start") {
      return el("section", { id: "agent", class: "audit-note" }, el("h3", {}, "Calibration"),
        el("p", {}, "The agent's answer is hidden while it calibrates, so that yours measures it independently."));
    }
    if (task.kind === "audit" || task.suggestion === null) {
      return el("section", { id: "agent", class: "audit-note" }, el("h3", {}, "Audit"),
        el("p", {}, "The agent's answer is hidden on audits, so that yours measures it independently."));
    }
    return el("section", { id: "agent" },
      el("h3", {}, "Agent's suggestion"),
      el("p", {}, el("span", { id: "suggestion", class: "badge suggestion" }, task.suggestion),
        ` confidence ${LA.pct(task.confidence)}`),
      task.evidence && task.evidence.length ? votes(task.evidence) : el("p", { class: "muted" }, "No votes recorded."),
      task.evidence ? nearest(task.evidence) : null);
  }

  function item(task, thumbnail) {
    const it = task.item;
    return el("section", { id: "item" },
      el("h2", {}, "Item ", el("code", { id: "item-id" }, it.external_id)),
      thumbnail,
      it.text !== null ? el("pre", { id: "item-text" }, it.text) : el("p", { class: "muted" }, "(no text)"),
      metadata(it.metadata));
  }

  return { item, agent, neighbours, metadata };
})();
