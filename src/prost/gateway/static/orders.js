// Orders: the list (newest first; an admin sees everyone's) and one order whose
// status and saga timeline refresh by themselves until the order is final.

import * as api from "./api.js";
import { add, h, mount } from "./dom.js";
import { FINAL_STATUSES, dateTime, money, shortId, words } from "./format.js";
import { sagaBusy, sagaTimeline } from "./timeline.js";
import { busy, errorBox, heading, messageSlot, pager, showError, statusBadge } from "./ui.js";

const PAGE_SIZE = 20;
const FAST_POLL_MS = 1000;
const SLOW_POLL_MS = 3000;

function orderRow(order) {
  const count = order.items.reduce((n, item) => n + item.quantity, 0);
  return h("li", { class: "order-row", dataset: { orderId: order.id, status: order.status } },
    h("a", { href: `#/orders/${order.id}`, class: "order-link" }, `Order ${shortId(order.id)}`),
    h("span", { class: "muted small" }, dateTime(order.created_at)),
    h("span", null, `${count} item${count === 1 ? "" : "s"} · ${money(order.total_amount, order.currency)}`),
    h("span", { class: "order-status" }, statusBadge(order.status),
      order.failure_reason ? h("span", { class: "reason" }, words(order.failure_reason)) : null));
}

export async function ordersView(ctx) {
  const page = Math.max(1, Number.parseInt(ctx.query.get("page") || "1", 10) || 1);
  const admin = api.isAdmin();
  const messages = messageSlot();
  const body = h("div");

  async function load(quiet) {
    try {
      const list = await api.listOrders({ page, page_size: PAGE_SIZE }, { signal: ctx.signal });
      messages.replaceChildren();
      mount(body,
        list.total === 0
          ? h("p", { class: "empty" }, "No orders yet. ", h("a", { href: "#/" }, "Browse the shop."))
          : h("ul", { class: "order-list", "aria-label": "Orders" }, list.items.map(orderRow)),
        pager({ page: list.page, pageSize: list.page_size, total: list.total }, (n) => ctx.navigate(`#/orders?page=${n}`)));
      return list;
    } catch (err) {
      if (err?.name === "AbortError") return null;
      if (quiet) showError(messages, err, "Could not refresh the orders");
      else mount(body, errorBox(err, "Could not load the orders"));
      return null;
    }
  }

  let list = await load(false);
  add(ctx.root, heading(admin ? "All orders" : "Your orders"),
    h("p", { class: "muted small" }, "Orders still in progress update by themselves."), messages, body);
  ctx.every(2000, async () => {
    if (list && list.items.some((o) => !FINAL_STATUSES.has(o.status))) list = (await load(true)) || list;
  });
}

export async function orderView(ctx) {
  const [id] = ctx.params;
  const messages = messageSlot();
  const statusEl = h("div", { class: "order-status-line", "aria-live": "polite", "aria-atomic": "true" });
  const summary = h("div");
  const progress = h("div");
  const actions = h("div", { class: "actions" });
  let order = null;
  let saga = null;
  let polls = 0;
  let settleChecks = 0;
  let stopped = false;

  async function load() {
    const [o, sg] = await Promise.allSettled([api.getOrder(id, { signal: ctx.signal }), api.getSaga(id, { signal: ctx.signal })]);
    if (o.status === "rejected" && o.reason?.name === "AbortError") return false;
    if (o.status === "rejected") {
      showError(messages, o.reason, "Could not load this order");
      return false;
    }
    messages.replaceChildren();
    order = o.value;
    if (sg.status === "fulfilled") saga = sg.value;
    else if (sg.reason?.name !== "AbortError") messages.append(errorBox(sg.reason, "Could not load the order's progress"));
    draw();
    return true;
  }

  let wasFinal = null;
  function draw() {
    const final = FINAL_STATUSES.has(order.status);
    // Reaching a final status changes the cart (a new one, or the old one reopened).
    if (final && wasFinal === false) ctx.refreshCart();
    wasFinal = final;
    mount(statusEl,
      h("span", null, "Status: "), statusBadge(order.status),
      order.failure_reason ? h("span", { class: "reason" }, ` Reason: ${words(order.failure_reason)}`) : null,
      final ? null : h("span", { class: "muted small" }, " · updating…"));
    mount(summary,
      h("p", { class: "muted" }, `Placed ${dateTime(order.created_at)}`),
      h("ul", { class: "order-items" }, order.items.map((item) =>
        h("li", null, h("span", null, `${item.quantity} × `, h("a", { href: `#/products/${item.product_id}` }, item.name)),
          h("span", null, money(item.line_total, order.currency))))),
      h("p", { class: "cart-total" }, "Total ", h("strong", null, money(order.total_amount, order.currency))));
    mount(progress, h("h2", null, "Progress"), sagaTimeline(order, saga));
    if (final) {
      mount(actions,
        order.status !== "confirmed" ? h("a", { href: "#/cart", class: "button secondary" }, "Back to the cart") : null,
        h("a", { href: "#/", class: "button secondary" }, "Continue shopping"));
    } else {
      const cancel = h("button", { type: "button", class: "button danger" }, "Cancel order");
      cancel.addEventListener("click", () => busy(cancel, async () => {
        try {
          await api.cancelOrder(id);
          await load();
        } catch (err) {
          showError(messages, err, "Could not cancel the order");
        }
      }, "Cancelling…"));
      mount(actions, cancel);
    }
  }

  const ok = await load();
  add(ctx.root, 
    h("p", { class: "breadcrumb" }, h("a", { href: "#/orders" }, "← All orders")),
    heading(`Order ${shortId(id)}`),
    messages);
  if (!ok) return;
  add(ctx.root, h("div", { class: "order-layout" },
    h("section", { class: "card", "aria-label": "Order summary" }, statusEl, summary, actions),
    h("section", { class: "card", "aria-label": "Progress" }, progress)));

  // Poll fast at first, then slower; stop once final and the saga's last compensation has landed.
  let inFlight = false;
  const tick = async () => {
    if (stopped || inFlight || !ctx.isCurrent()) return;
    polls += 1;
    if (FINAL_STATUSES.has(order.status)) {
      settleChecks += 1;
      if (!sagaBusy(saga) || settleChecks > 20) {
        stopped = true;
        return;
      }
    }
    inFlight = true;
    try {
      await load();
    } finally {
      inFlight = false;
    }
  };
  ctx.every(FAST_POLL_MS, () => {
    if (polls < 15) tick();
  });
  ctx.every(SLOW_POLL_MS, () => {
    if (polls >= 15) tick();
  });
}
