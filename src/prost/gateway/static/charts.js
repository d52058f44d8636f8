// Inline SVG charts, built with DOM APIs only (labels are text nodes: a product
// name in a chart is as inert as anywhere else). Each chart is a <figure> with a
// caption; the <svg> is role="img" with a <title> and a <desc> that says the same
// numbers in words, so the picture is never the only way to read them. Charts are
// drawn at the container's real width (text stays at its real size on a phone) and
// redrawn when that width changes.

import { h, s, uid } from "./dom.js";

const CHAR_WIDTH = 7.9; // a generous width of one 13px character, to shorten long labels
const SMALL_CHAR_WIDTH = 6.4; // the same for the 11.5px tick labels

function fit(text, maxWidth, charWidth = CHAR_WIDTH) {
  const max = Math.max(3, Math.floor(maxWidth / charWidth));
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function svgRoot(width, height, title, desc) {
  const titleId = uid("chart-title");
  const descId = uid("chart-desc");
  return s("svg", {
    class: "chart",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": `${titleId} ${descId}`,
  }, s("title", { id: titleId }, title), s("desc", { id: descId }, desc));
}

/** A figure whose SVG is redrawn at the figure's width; `draw(width)` returns the <svg>. */
export function responsiveFigure(caption, draw, onCleanup) {
  const holder = h("div", { class: "chart-holder" });
  const figure = h("figure", { class: "chart-figure" }, h("figcaption", null, caption), holder);
  let lastWidth = 0;
  const redraw = () => {
    const width = Math.max(260, Math.floor(holder.clientWidth || 600));
    if (width === lastWidth) return;
    lastWidth = width;
    holder.replaceChildren(draw(width));
  };
  const observer = new ResizeObserver(() => requestAnimationFrame(redraw));
  observer.observe(holder);
  onCleanup?.(() => observer.disconnect());
  queueMicrotask(redraw);
  return figure;
}

/**
 * Horizontal bars. rows: [{label, value, tone?, track?, note?}] — `track` draws a light
 * bar behind (e.g. stock behind available); `tone` picks the colour class.
 */
export function horizontalBars({ title, desc, rows, max: fixedMax = null, valueText = (r) => String(r.value) }) {
  return (width) => {
    const rowHeight = 30;
    const top = 6;
    const labelWidth = Math.min(200, Math.round(width * (width < 500 ? 0.45 : 0.38)));
    const valueWidth = 64;
    const barSpace = Math.max(40, width - labelWidth - valueWidth - 12);
    const max = fixedMax ?? Math.max(1, ...rows.map((r) => Math.max(r.value, r.track ?? 0)));
    const height = top * 2 + rows.length * rowHeight;
    const svg = svgRoot(width, height, title, desc);
    rows.forEach((row, i) => {
      const y = top + i * rowHeight;
      const label = String(row.label);
      const text = s("text", { x: labelWidth - 8, y: y + rowHeight / 2, class: "chart-label", "text-anchor": "end", "dominant-baseline": "central" }, fit(label, labelWidth - 12));
      if (text.textContent !== label) text.append(s("title", null, label));
      svg.append(text);
      if (row.track !== undefined && row.track !== null) {
        const track = Math.min(row.track, max); // a track past the scale is drawn full length
        svg.append(s("rect", { x: labelWidth, y: y + 6, width: Math.max(1, (track / max) * barSpace), height: rowHeight - 12, rx: 3, class: "bar-track" }));
      }
      const w = row.value > 0 ? Math.max(2, (Math.min(row.value, max) / max) * barSpace) : 0;
      svg.append(s("rect", { x: labelWidth, y: y + 6, width: w, height: rowHeight - 12, rx: 3, class: ["bar", `tone-${row.tone || "neutral"}`] }));
      const valueX = labelWidth + Math.max(w, row.track ? (Math.min(row.track, max) / max) * barSpace : 0) + 6;
      svg.append(s("text", { x: valueX, y: y + rowHeight / 2, class: "chart-value", "dominant-baseline": "central" }, valueText(row)));
    });
    return svg;
  };
}

/** Vertical bars over named buckets: [{label, count}]. */
export function histogram({ title, desc, buckets }) {
  return (width) => {
    const height = 220;
    const left = 36;
    const bottom = 40;
    const top = 22;
    const plotWidth = width - left - 8;
    const plotHeight = height - top - bottom;
    const highest = Math.max(1, ...buckets.map((b) => b.count));
    // Guides at whole, evenly spaced counts (at most five), and the scale ends on one.
    const tickStep = Math.max(1, Math.ceil(highest / 4));
    const max = tickStep * Math.ceil(highest / tickStep);
    const svg = svgRoot(width, height, title, desc);
    const step = plotWidth / buckets.length;
    for (let value = 0; value <= max; value += tickStep) {
      const y = top + plotHeight - (value / max) * plotHeight;
      svg.append(s("line", { x1: left, x2: width - 8, y1: y, y2: y, class: value === 0 ? "axis" : "grid" }));
      svg.append(s("text", { x: left - 6, y, class: "chart-tick", "text-anchor": "end", "dominant-baseline": "central" }, String(value)));
    }
    buckets.forEach((b, i) => {
      const barWidth = Math.max(4, step * 0.7);
      const x = left + i * step + (step - barWidth) / 2;
      const barHeight = (b.count / max) * plotHeight;
      const y = top + plotHeight - barHeight;
      if (b.count > 0) svg.append(s("rect", { x, y, width: barWidth, height: barHeight, rx: 2, class: ["bar", `tone-${b.tone || "primary"}`] }));
      if (b.count > 0) svg.append(s("text", { x: x + barWidth / 2, y: y - 5, class: "chart-value", "text-anchor": "middle" }, String(b.count)));
      svg.append(s("text", { x: left + i * step + step / 2, y: top + plotHeight + 16, class: "chart-tick", "text-anchor": "middle" }, fit(b.label, step, SMALL_CHAR_WIDTH)));
    });
    svg.append(s("text", { x: left + plotWidth / 2, y: height - 4, class: "chart-axis-title", "text-anchor": "middle" }, "seconds from placing to final status"));
    return svg;
  };
}
