// The cart: lines, totals, how long each hold lasts, and checkout.
//
// Checkout sends an Idempotency-Key that belongs to one *attempt*: it is made when
// the person first presses Pay, reused if the same attempt is sent again (a double
// click, a retry after the network dropped, a 409 "still running"), and dropped
// when the attempt got a definite answer or the card details change. So a double
// click never makes two orders, and a corrected card is a new attempt.

import * as api from "./api.js";
import { add, field, h, mount, uuid4 } from "./dom.js";
import { money, timeLeft } from "./format.js";
import { busy, errorBox, heading, messageSlot, showError } from "./ui.js";

export const TEST_CARDS = [
  ["4242424242424242", "succeeds"],
  ["4000000000000002", "declined: the order is cancelled and the cart comes back"],
  ["4000000000009995", "insufficient funds: the order is cancelled"],
  ["4000000000000119", "provider error twice, then succeeds (retried)"],
  ["4000000000000341", "provider never answers: the order times out"],
];

const groupDigits = (n) => n.replace(/(\d{4})(?=\d)/g, "$1 ");

function holdText(iso) {
  if (!iso) return "Not held";
  const left = timeLeft(iso);
  return left ? `Held for ${left}` : "Hold expired";
}

function lineItem(ctx, line, editable, reload, messages) {
  const hold = h("time", { class: "hold", datetime: line.hold_expires_at || "" }, holdText(line.hold_expires_at));
  const children = [
    h("div", { class: "line-main" },
      h("h3", { class: "line-name" }, h("a", { href: `#/products/${line.product_id}` }, line.name)),
      h("p", { class: "muted small" }, `SKU ${line.sku} · ${money(line.unit_price)} each`),
      h("p", { class: "small" }, hold)),
  ];
  if (editable) {
    const qty = field("Quantity", { type: "number", name: `quantity-${line.product_id}`, min: "0", max: "1000", value: String(line.quantity), inputmode: "numeric" });
    qty.input.setAttribute("aria-label", `Quantity of ${line.name}`);
    const update = h("button", { type: "submit", class: "button secondary small" }, "Update");
    const form = h("form", { class: "line-qty", novalidate: true }, qty.wrap, update);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(update, async () => {
        try {
          // Not a number: sent as typed, so the API says what is wrong (never read as 0, which removes).
          const n = Number.parseInt(qty.input.value, 10);
          await api.setCartQuantity(line.product_id, Number.isFinite(n) ? n : qty.input.value);
          await reload();
        } catch (err) {
          showError(messages, err, `Could not change ${line.name}`);
        }
      });
    });
    const remove = h("button", { type: "button", class: "button link danger small" }, "Remove");
    remove.setAttribute("aria-label", `Remove ${line.name} from the cart`);
    remove.addEventListener("click", () =>
      busy(remove, async () => {
        try {
          await api.removeFromCart(line.product_id);
          await reload();
        } catch (err) {
          showError(messages, err, `Could not remove ${line.name}`);
        }
      }),
    );
    children.push(h("div", { class: "line-edit" }, form, remove));
  } else {
    children.push(h("p", { class: "line-edit" }, `Quantity ${line.quantity}`));
  }
  children.push(h("p", { class: "line-total" }, money(line.line_total)));
  return { el: h("li", { class: "cart-line", dataset: { productId: line.product_id } }, children), hold, expiresAt: line.hold_expires_at };
}

function checkoutForm(ctx, cart, messages) {
  const number = field("Card number", { name: "card_number", autocomplete: "cc-number", inputmode: "numeric", spellcheck: "false" });
  const month = field("Expiry month", { name: "exp_month", autocomplete: "cc-exp-month", inputmode: "numeric", placeholder: "MM", maxlength: "2" });
  const year = field("Expiry year", { name: "exp_year", autocomplete: "cc-exp-year", inputmode: "numeric", placeholder: "YYYY", maxlength: "4" });
  const cvc = field("CVC", { name: "cvc", autocomplete: "cc-csc", inputmode: "numeric", maxlength: "4" });
  const pay = h("button", { type: "submit", class: "button big" }, `Pay ${money(cart.total_amount, cart.currency)}`);
  const status = h("p", { class: "muted small", role: "status" });

  let attempt = null; // { key } while one checkout attempt is open
  const form = h("form", { class: "checkout card", novalidate: true, "aria-labelledby": "checkout-title" },
    h("h2", { id: "checkout-title" }, "Checkout"),
    h("fieldset", null, h("legend", null, "Card"),
      number.wrap, h("div", { class: "row" }, month.wrap, year.wrap, cvc.wrap)),
    messages,
    h("div", { class: "actions" }, pay),
    status);
  form.addEventListener("input", () => {
    attempt = null; // different card details: a new attempt with a new key
  });

  const hints = h("section", { class: "test-cards", "aria-labelledby": "test-cards-title" },
    h("h3", { id: "test-cards-title" }, "Test cards"),
    h("p", { class: "small" }, "Payments are simulated. Use any future expiry date and any 3-digit CVC."),
    h("ul", null, TEST_CARDS.map(([card, outcome]) => {
      const use = h("button", { type: "button", class: "button link small" }, "Use");
      use.setAttribute("aria-label", `Use test card ${groupDigits(card)}`);
      use.addEventListener("click", () => {
        number.input.value = groupDigits(card);
        if (!month.input.value) month.input.value = "12";
        if (!year.input.value) year.input.value = String(new Date().getFullYear() + 2);
        if (!cvc.input.value) cvc.input.value = "123";
        attempt = null;
        number.input.focus();
      });
      return h("li", null, h("code", null, groupDigits(card)), " — ", outcome, " ", use);
    })));

  let sending = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (sending) return; // the second click of a double click
    sending = true;
    pay.disabled = true;
    pay.setAttribute("aria-busy", "true");
    messages.replaceChildren();
    status.textContent = "Placing your order…";
    attempt = attempt || { key: uuid4() };
    const payment = {
      card_number: number.input.value.replace(/[\s-]/g, ""),
      exp_month: Number.parseInt(month.input.value, 10) || month.input.value,
      exp_year: Number.parseInt(year.input.value, 10) || year.input.value,
      cvc: cvc.input.value.trim(),
    };
    try {
      const answer = await api.checkout(payment, attempt.key);
      attempt = null;
      ctx.refreshCart();
      ctx.flash("Order placed. Its progress updates below by itself.");
      ctx.navigate(`#/orders/${answer.order_id}`);
    } catch (err) {
      // Keep the key when the outcome is unknown (network) or the first try still runs (409 conflict).
      const unknown = err?.status === 0 || err?.code === "conflict";
      if (!unknown) attempt = null;
      showError(messages, err, "Checkout failed");
      status.textContent = unknown ? "Pressing Pay again retries the same attempt: it cannot create a second order." : "";
    } finally {
      sending = false;
      pay.disabled = false;
      pay.removeAttribute("aria-busy");
    }
  });
  return h("div", { class: "checkout-area" }, form, hints);
}

export async function cartView(ctx) {
  const messages = messageSlot();
  const body = h("div", { class: "cart-body" });
  let holds = [];

  async function reload({ quiet = false } = {}) {
    let cart;
    try {
      cart = await api.getCart({ signal: ctx.signal });
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      if (quiet) showError(messages, err, "Could not refresh the cart");
      else mount(body, errorBox(err, "Could not load the cart"));
      return null;
    }
    draw(cart);
    ctx.refreshCart();
    return cart;
  }

  let lastStatus = null;
  function draw(cart) {
    const open = cart.status === "open";
    const lines = cart.items.map((line) => lineItem(ctx, line, open, () => reload({ quiet: true }), messages));
    holds = lines;
    if (cart.items.length === 0) {
      mount(body, h("p", { class: "empty" }, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the shop.")));
      lastStatus = cart.status;
      return;
    }
    const parts = [];
    if (!open) {
      parts.push(h("div", { class: "alert alert-info", role: "status" },
        h("p", null, "This cart is being checked out. If the order fails, its items come back here. ",
          h("a", { href: "#/orders" }, "See your orders."))));
    }
    parts.push(
      h("ul", { class: "cart-lines", "aria-label": "Cart lines" }, lines.map((l) => l.el)),
      h("p", { class: "cart-total" }, "Total ", h("strong", { dataset: { role: "total" } }, money(cart.total_amount, cart.currency))),
    );
    if (open) parts.push(checkoutForm(ctx, cart, h("div", { class: "messages" })));
    mount(body, parts);
    lastStatus = cart.status;
  }

  const first = await reload();
  add(ctx.root, heading("Your cart"), messages, body);

  // Hold countdowns tick every second; a cart being checked out is watched until it settles.
  ctx.every(1000, () => {
    for (const line of holds) line.hold.textContent = holdText(line.expiresAt);
  });
  ctx.every(2000, () => {
    if (lastStatus && lastStatus !== "open") {
      reload({ quiet: true }).catch((err) => showError(messages, err, "Could not refresh the cart"));
    }
  });
  return first;
}
