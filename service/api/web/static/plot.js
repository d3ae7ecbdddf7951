// Small line charts drawn as inline SVG (no library): lines, a shaded interval band, reference lines and dots.
"use strict";

const Plot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const M = { left: 46, right: 14, top: 12, bottom: 38 };

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    for (const c of children) if (c) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function ticks(lo, hi, n = 5) {
    const out = [];
    for (let i = 0; i <= n; i++) out.push(lo + ((hi - lo) * i) / n);
    return out;
  }

  function path(points, sx, sy) {
    return points.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
  }

  // opts: {id, title, width, height, xDomain, yDomain, xLabel, yLabel, xFormat, yFormat, series: [{points, cls,
  // name}], band: [[x, lo, hi]], hlines: [{y, cls, label}], vlines: [{x, cls, label}], dots: [{x, y, title}], empty}
  function lineChart(opts) {
    const W = opts.width || 520;
    const H = opts.height || 280;
    const [x0, x1] = opts.xDomain;
    const [y0, y1] = opts.yDomain;
    const sx = (x) => M.left + ((x - x0) / (x1 - x0 || 1)) * (W - M.left - M.right);
    const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - M.top - M.bottom);
    const fx = opts.xFormat || ((x) => x.toFixed(2));
    const fy = opts.yFormat || ((y) => y.toFixed(2));
    const root = svg("svg", { id: opts.id, class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                              "aria-label": opts.title || "" }, svg("title", {}, opts.title || ""));
    for (const t of ticks(y0, y1)) {
      root.append(svg("line", { class: "grid", x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t) }),
        svg("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, fy(t)));
    }
    for (const t of ticks(x0, x1)) {
      root.append(svg("text", { x: sx(t), y: H - M.bottom + 15, "text-anchor": "middle" }, fx(t)));
    }
    root.append(
      svg("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }),
      svg("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }),
      svg("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle" }, opts.xLabel || ""),
      svg("text", { x: 12, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle",
                    transform: `rotate(-90 12 ${(M.top + H - M.bottom) / 2})` }, opts.yLabel || ""));
    const hasData = (opts.series || []).some((s) => s.points.length);
    if (!hasData) {
      root.append(svg("text", { class: "empty", x: (M.left + W - M.right) / 2, y: (M.top + H - M.bottom) / 2,
                                "text-anchor": "middle" }, opts.empty || "no data yet"));
      return root;
    }
    if (opts.band && opts.band.length) {
      const upper = opts.band.map(([x, , hi]) => [x, hi]);
      const lower = opts.band.map(([x, lo]) => [x, lo]).reverse();
      root.append(svg("path", { class: "band", d: `${path(upper, sx, sy)} ${path(lower, sx, sy).replace("M", "L")} Z` }));
    }
    for (const h of opts.hlines || []) {
      root.append(svg("line", { class: h.cls || "target", x1: M.left, x2: W - M.right, y1: sy(h.y), y2: sy(h.y) },
        svg("title", {}, h.label || "")));
    }
    for (const v of opts.vlines || []) {
      root.append(svg("line", { class: v.cls || "marker", "data-x": v.x, x1: sx(v.x), x2: sx(v.x), y1: M.top,
                                y2: H - M.bottom }, svg("title", {}, v.label || "")));
    }
    for (const s of opts.series) {
      if (s.points.length) root.append(svg("path", { class: `line ${s.cls || ""}`, d: path(s.points, sx, sy) },
        svg("title", {}, s.name || "")));
    }
    for (const d of opts.dots || []) {
      root.append(svg("circle", { class: "dot", cx: sx(d.x), cy: sy(d.y), r: 4 }, svg("title", {}, d.title || "")));
    }
    return root;
  }

  return { lineChart };
})();
