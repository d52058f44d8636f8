// The admin dashboard: pictures of what the shop is doing, from public endpoints only.
//
// - Orders by status: exact counts (GET /orders?status=…&page_size=1 → total), and
//   why failed orders failed, from the latest orders.
// - Saga duration: for the latest final orders, the time from placing to the last
//   saga event (GET /orders/{id}/saga), as a histogram.
// - Stock running low: products whose `available` is at or under a threshold.

import * as api from "./api.js";
import { add, field, h, mount } from "./dom.js";
import { FINAL_STATUSES, duration, words } from "./format.js";
import { horizontalBars, histogram, responsiveFigure } from "./charts.js";
import { sagaDuration } from "./timeline.js";
import { busy, errorBox, heading } from "./ui.js";

const STATUSES = [
  ["confirmed", "good"],
  ["cancelled", "bad"],
  ["rejected", "warn"],
  ["stock_reserved", "neutral"],
  ["pending", "neutral"],
];
const RECENT_ORDER_PAGES = 2; // × 100 orders
const SAGA_SAMPLE = 30;
const SAGA_CONCURRENCY = 4; // gentle with the per-address rate limit
const PRODUCT_PAGES = 5; // × 100 products
const BUCKETS = [
  [0, 0.5, "< 0.5"],
  [0.5, 1, "0.5–1"],
  [1, 2, "1–2"],
  [2, 5, "2–5"],
  [5, 10, "5–10"],
  [10, 30, "10–30"],
  [30, Infinity, "30 +"],
];

async function mapLimited(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      try {
        results[i] = { ok: true, value: await fn(items[i]) };
      } catch (err) {
        results[i] = { ok: false, error: err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

async function allPages(fetchPage, maxPages) {
  const items = [];
  let total = 0;
  for (let page = 1; page <= maxPages; page += 1) {
    const list = await fetchPage(page);
    items.push(...list.items);
    total = list.total;
    if (items.length >= list.total || list.items.length === 0) break;
  }
  return { items, total };
}

function percentile(sorted, p) {
  if (!sorted.length) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function tile(label, value, role) {
  return h("div", { class: "tile", dataset: { role } }, h("span", { class: "tile-value" }, String(value)), h("span", { class: "tile-label" }, label));
}

export async function dashboardView(ctx) {
  const { signal } = ctx;
  const tiles = h("div", { class: "tiles" });
  const statusArea = h("section", { class: "card", "aria-labelledby": "dash-status" });
  const durationArea = h("section", { class: "card", "aria-labelledby": "dash-duration" });
  const stockArea = h("section", { class: "card", "aria-labelledby": "dash-stock" });
  const threshold = field("Low when available is at most", { type: "number", name: "low_threshold", min: "0", value: "5", inputmode: "numeric" });
  const refresh = h("button", { type: "button", class: "button secondary" }, "Refresh");
  const updated = h("p", { class: "muted small", role: "status" });

  async function loadStatuses() {
    const counts = await Promise.all(STATUSES.map(([status]) =>
      api.listOrders({ status, page: 1, page_size: 1 }, { signal }).then((l) => l.total)));
    const recent = await allPages((page) => api.listOrders({ page, page_size: 100 }, { signal }), RECENT_ORDER_PAGES);
    return { counts: Object.fromEntries(STATUSES.map(([s], i) => [s, counts[i]])), recent };
  }

  function drawStatuses({ counts, recent }) {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const inFlight = counts.pending + counts.stock_reserved;
    const rows = [
      { label: "confirmed", value: counts.confirmed, tone: "good" },
      { label: "cancelled", value: counts.cancelled, tone: "bad" },
      { label: "rejected", value: counts.rejected, tone: "warn" },
      { label: "in progress", value: inFlight, tone: "neutral" },
    ];
    const desc = rows.map((r) => `${r.label}: ${r.value}`).join(", ");
    const reasons = new Map();
    for (const o of recent.items) {
      if (o.status === "cancelled" || o.status === "rejected") {
        const key = words(o.failure_reason || "unknown");
        reasons.set(key, (reasons.get(key) || 0) + 1);
      }
    }
    const reasonRows = [...reasons.entries()].sort((a, b) => b[1] - a[1]).map(([label, value]) => ({ label, value, tone: "bad" }));
    mount(statusArea,
      h("h2", { id: "dash-status" }, "Orders by status"),
      total === 0 ? h("p", { class: "empty" }, "No orders yet.") :
        responsiveFigure(total === 1 ? "The one order so far, by status." : `All ${total} orders by status.`, horizontalBars({ title: "Orders by status", desc, rows }), ctx.onCleanup),
      reasonRows.length
        ? responsiveFigure(`Why orders failed, among the latest ${recent.items.length} order${recent.items.length === 1 ? "" : "s"}.`,
          horizontalBars({ title: "Failure reasons", desc: reasonRows.map((r) => `${r.label}: ${r.value}`).join(", "), rows: reasonRows }),
          ctx.onCleanup)
        : null);
    mount(tiles,
      tile("orders", total, "orders-total"),
      tile("confirmed", counts.confirmed, "orders-confirmed"),
      tile("failed", counts.cancelled + counts.rejected, "orders-failed"),
      tile("in progress", inFlight, "orders-in-flight"));
  }

  async function loadDurations(recent) {
    const finals = recent.items.filter((o) => FINAL_STATUSES.has(o.status)).slice(0, SAGA_SAMPLE);
    const results = await mapLimited(finals, SAGA_CONCURRENCY, (o) => api.getSaga(o.id, { signal }));
    const durations = [];
    let failures = 0;
    let firstError = null;
    results.forEach((r, i) => {
      let ms = r.ok ? sagaDuration(r.value, finals[i]) : Number.NaN;
      if (!r.ok) {
        failures += 1;
        firstError = firstError || r.error;
      }
      // No saga timestamps: fall back to the order's own first and last change.
      if (!Number.isFinite(ms)) ms = new Date(finals[i].updated_at) - new Date(finals[i].created_at);
      if (Number.isFinite(ms) && ms >= 0) durations.push(ms);
    });
    return { durations, failures, firstError };
  }

  function drawDurations({ durations, failures, firstError }) {
    const sorted = [...durations].sort((a, b) => a - b);
    const buckets = BUCKETS.map(([lo, hi, label]) => ({
      label,
      count: sorted.filter((ms) => ms / 1000 >= lo && ms / 1000 < hi).length,
      tone: hi <= 5 ? "primary" : "warn",
    }));
    const median = percentile(sorted, 0.5);
    const p90 = percentile(sorted, 0.9);
    const desc = buckets.map((b) => `${b.label} s: ${b.count}`).join(", ");
    mount(durationArea,
      h("h2", { id: "dash-duration" }, "How long the saga takes"),
      sorted.length === 0 ? h("p", { class: "empty" }, "No finished orders yet.") : [
        h("p", { class: "stats" },
          h("span", null, "median ", h("strong", { dataset: { role: "median" } }, duration(median))),
          h("span", null, "90th percentile ", h("strong", null, duration(p90))),
          h("span", null, "slowest ", h("strong", null, duration(sorted[sorted.length - 1])))),
        responsiveFigure(`Time from placing an order to its final status, for the latest ${sorted.length === 1 ? "finished order" : `${sorted.length} finished orders`}.`,
          histogram({ title: "Saga duration distribution", desc, buckets }), ctx.onCleanup),
      ],
      failures ? errorBox(firstError, `${failures} saga${failures === 1 ? "" : "s"} could not be read`) : null);
  }

  let products = null;
  async function loadProducts() {
    products = await allPages((page) => api.listProducts({ page, page_size: 100, sort: "name" }, { signal }), PRODUCT_PAGES);
  }

  function drawStock() {
    const limit = Math.max(0, Number.parseInt(threshold.input.value, 10) || 0);
    const low = products.items.filter((p) => p.available <= limit).sort((a, b) => a.available - b.available || a.name.localeCompare(b.name));
    const shown = low.slice(0, 12);
    const rows = shown.map((p) => ({
      label: p.name,
      value: p.available,
      track: p.stock,
      tone: p.available === 0 ? "bad" : "warn",
    }));
    // One scale for every row, from 0 to the threshold: "low" reads the same on every bar.
    const scale = Math.max(1, limit, ...shown.map((p) => p.available));
    const desc = shown.map((p) => `${p.name}: ${p.available} available of ${p.stock} in stock`).join("; ");
    mount(stockArea,
      h("h2", { id: "dash-stock" }, "Stock running low"),
      h("form", { class: "filters compact", on: { submit: (e) => { e.preventDefault(); drawStock(); } } },
        threshold.wrap, h("div", { class: "actions" }, h("button", { type: "submit", class: "button secondary" }, "Show"))),
      h("p", { dataset: { role: "low-count" } },
        `${low.length} of ${products.total} product${products.total === 1 ? "" : "s"} ${low.length === 1 ? "has" : "have"} ${limit} or fewer units available.`,
        products.items.length < products.total ? ` (Checked the first ${products.items.length}.)` : ""),
      shown.length
        ? responsiveFigure(`Lowest availability first, on a scale up to ${scale}: the coloured bar is what can still be bought, the grey one the stock on hand (units held in carts and orders are the difference).${low.length > shown.length ? ` Showing ${shown.length} of ${low.length}.` : ""}`,
          horizontalBars({ title: "Products with low availability", desc, rows, max: scale, valueText: (r) => `${r.value} of ${r.track}` }), ctx.onCleanup)
        : h("p", { class: "empty" }, "Nothing is running low."),
      shown.length
        ? h("p", { class: "small" }, "Restock on the ", h("a", { href: "#/admin/catalog" }, "catalog page"), ".")
        : null);
  }

  async function loadAll() {
    const [status, stock] = await Promise.allSettled([loadStatuses(), loadProducts()]);
    for (const r of [status, stock]) if (r.status === "rejected" && r.reason?.name === "AbortError") throw r.reason;
    if (status.status === "fulfilled") {
      drawStatuses(status.value);
      mount(durationArea, h("h2", { id: "dash-duration" }, "How long the saga takes"), h("p", { class: "muted" }, "Reading sagas…"));
    } else {
      mount(statusArea, h("h2", { id: "dash-status" }, "Orders by status"), errorBox(status.reason, "Could not load orders"));
      mount(durationArea, h("h2", { id: "dash-duration" }, "How long the saga takes"), errorBox(status.reason, "Could not load orders"));
    }
    if (stock.status === "fulfilled") drawStock();
    else mount(stockArea, h("h2", { id: "dash-stock" }, "Stock running low"), errorBox(stock.reason, "Could not load products"));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    if (status.status === "fulfilled") {
      // Sagas are many small requests: draw the rest first, then fill this in.
      loadDurations(status.value.recent).then(drawDurations, (err) => {
        if (err?.name !== "AbortError") mount(durationArea, errorBox(err, "Could not read sagas"));
      });
    }
  }

  refresh.addEventListener("click", () => busy(refresh, () => loadAll().catch((err) => {
    if (err?.name !== "AbortError") mount(updated, errorBox(err, "Could not refresh"));
  }), "Refreshing…"));

  await loadAll();
  add(ctx.root, 
    heading("Dashboard"),
    h("div", { class: "toolbar" }, refresh, updated, h("a", { href: "#/admin/catalog" }, "Manage the catalog →")),
    tiles,
    h("div", { class: "dash-grid" }, statusArea, durationArea, stockArea),
  );
}
