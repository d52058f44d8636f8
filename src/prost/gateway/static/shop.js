// The shop: products with search, category filter, sort and pages; one product
// with its availability kept live. Product names and descriptions are text only
// (see dom.js): whatever an admin typed is shown, never interpreted.

import * as api from "./api.js";
import { add, field, h, selectField } from "./dom.js";
import { money } from "./format.js";
import { busy, errorBox, heading, messageSlot, pager, showError, showOk } from "./ui.js";

const PAGE_SIZE = 12;
const SORTS = [
  ["name", "Name, A to Z"],
  ["-name", "Name, Z to A"],
  ["price", "Price, low to high"],
  ["-price", "Price, high to low"],
  ["-created_at", "Newest first"],
  ["created_at", "Oldest first"],
];
const LIVE_AVAILABILITY_MS = 3000;

function availabilityText(product) {
  if (!product.active) return "No longer sold";
  if (product.available <= 0) return "Out of stock";
  return `${product.available} available`;
}

function availabilityClass(product) {
  if (!product.active || product.available <= 0) return "avail avail-none";
  return product.available <= 5 ? "avail avail-low" : "avail";
}

/** Add to the cart, or send a signed-out shopper to log in first. Resolves true when added. */
async function addToCart(ctx, product, quantity, messages) {
  if (!api.currentUser()) {
    ctx.flash("Log in to add products to your cart.");
    ctx.navigate(`#/login?next=${encodeURIComponent(location.hash || "#/")}`);
    return false;
  }
  try {
    await api.addToCart(product.id, quantity);
    showOk(messages, `Added ${quantity} × ${product.name} to your cart.`);
    ctx.refreshCart();
    return true;
  } catch (err) {
    showError(messages, err, `Could not add ${product.name}`);
    return false;
  }
}

function productCard(ctx, product, categoryName) {
  const messages = messageSlot();
  const avail = h("p", { class: availabilityClass(product), dataset: { role: "availability" } }, availabilityText(product));
  const addButton = h("button", { type: "button", class: "button", disabled: !product.active || product.available <= 0 }, "Add to cart");
  addButton.setAttribute("aria-label", `Add ${product.name} to cart`);
  addButton.addEventListener("click", () =>
    busy(addButton, async () => {
      if (await addToCart(ctx, product, 1, messages)) {
        try {
          const fresh = await api.getProduct(product.id, { signal: ctx.signal });
          avail.textContent = availabilityText(fresh);
          avail.className = availabilityClass(fresh);
        } catch (err) {
          showError(messages, err, "Could not refresh availability");
        }
      }
    }),
  );
  return h(
    "li",
    { class: "product-card", dataset: { productId: product.id } },
    h("article", { "aria-labelledby": `p-${product.id}` },
      h("h2", { class: "product-name", id: `p-${product.id}` }, h("a", { href: `#/products/${product.id}` }, product.name)),
      categoryName ? h("p", { class: "category" }, categoryName) : null,
      product.description ? h("p", { class: "description" }, product.description) : null,
      h("div", { class: "buy-row" },
        h("p", { class: "price" }, money(product.price, product.currency)),
        avail),
      addButton,
      messages),
  );
}

export async function productListView(ctx) {
  const q = ctx.query.get("q") || "";
  const categoryId = ctx.query.get("category_id") || "";
  const sort = SORTS.some(([v]) => v === ctx.query.get("sort")) ? ctx.query.get("sort") : "name";
  const page = Math.max(1, Number.parseInt(ctx.query.get("page") || "1", 10) || 1);

  const go = (changes) => {
    const next = new URLSearchParams({ q, category_id: categoryId, sort, page: String(page), ...changes });
    for (const [k, v] of [...next.entries()]) if (!v || (k === "page" && v === "1") || (k === "sort" && v === "name")) next.delete(k);
    const qs = next.toString();
    ctx.navigate(`#/${qs ? `?${qs}` : ""}`);
  };

  const messages = messageSlot();
  const [categoriesResult, productsResult] = await Promise.allSettled([
    api.listCategories({ signal: ctx.signal }),
    api.listProducts({ q, category_id: categoryId, sort, page, page_size: PAGE_SIZE }, { signal: ctx.signal }),
  ]);
  const categories = categoriesResult.status === "fulfilled" ? categoriesResult.value : [];
  const categoryNames = new Map(categories.map((c) => [c.id, c.name]));

  const search = field("Search", { type: "search", name: "q", value: q, placeholder: "Name, description or SKU", autocomplete: "off" });
  const category = selectField("Category", "category_id", [["", "All categories"], ...categories.map((c) => [c.id, c.name])], categoryId);
  const sorter = selectField("Sort by", "sort", SORTS, sort);
  const form = h("form", { class: "filters", role: "search", "aria-label": "Find products" },
    search.wrap, category.wrap, sorter.wrap,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "button" }, "Search")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go({ q: search.input.value.trim(), category_id: category.input.value, sort: sorter.input.value, page: "1" });
  });
  category.input.addEventListener("change", () => go({ q: search.input.value.trim(), category_id: category.input.value, page: "1" }));
  sorter.input.addEventListener("change", () => go({ q: search.input.value.trim(), sort: sorter.input.value, page: "1" }));

  add(ctx.root, heading("Products"), form, messages);
  if (categoriesResult.status === "rejected") add(ctx.root, errorBox(categoriesResult.reason, "Could not load categories"));
  if (productsResult.status === "rejected") {
    if (productsResult.reason?.name === "AbortError") throw productsResult.reason;
    add(ctx.root, errorBox(productsResult.reason, "Could not load products"));
    return;
  }
  const list = productsResult.value;
  const summary = list.total === 0
    ? (q ? `No products match “${q}”.` : categoryId ? "No products in this category." : "There are no products yet.")
    : `${list.total} product${list.total === 1 ? "" : "s"}${q ? ` matching “${q}”` : ""}`;
  add(ctx.root, 
    h("p", { class: "result-count", role: "status" }, summary),
    h("ul", { class: "product-grid" }, list.items.map((p) => productCard(ctx, p, categoryNames.get(p.category_id)))),
    pager({ page: list.page, pageSize: list.page_size, total: list.total }, (n) => go({ page: String(n) })),
  );
}

export async function productView(ctx) {
  const [id] = ctx.params;
  const messages = messageSlot();
  let product;
  try {
    product = await api.getProduct(id, { signal: ctx.signal });
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    add(ctx.root, heading("Product"), errorBox(err, "Could not load this product"), h("p", null, h("a", { href: "#/" }, "Back to the shop")));
    return;
  }
  let categoryName = null;
  if (product.category_id) {
    try {
      const categories = await api.listCategories({ signal: ctx.signal });
      categoryName = categories.find((c) => c.id === product.category_id)?.name ?? null;
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      messages.append(errorBox(err, "Could not load categories"));
    }
  }
  document.title = `${product.name} · prost`;

  const avail = h("span", { class: availabilityClass(product), dataset: { role: "availability" } }, availabilityText(product));
  const stockLine = h("span", { class: "muted" });
  const liveError = h("div");
  const quantity = field("Quantity", { type: "number", name: "quantity", min: "1", max: "1000", value: "1", inputmode: "numeric" });
  const addButton = h("button", { type: "submit", class: "button", disabled: !product.active || product.available <= 0 }, "Add to cart");
  const form = h("form", { class: "buy-form", novalidate: true }, quantity.wrap, h("div", { class: "actions" }, addButton));

  function showAvailability(p) {
    const text = availabilityText(p);
    if (avail.textContent !== text) avail.textContent = text;
    avail.className = availabilityClass(p);
    stockLine.textContent = p.active ? ` (${p.stock} on hand)` : "";
    addButton.disabled = !p.active || p.available <= 0;
  }
  showAvailability(product);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(addButton, async () => {
      const n = Number.parseInt(quantity.input.value, 10);
      if (await addToCart(ctx, product, Number.isFinite(n) ? n : quantity.input.value, messages)) await poll();
    });
  });

  async function poll() {
    try {
      product = await api.getProduct(id, { signal: ctx.signal });
      showAvailability(product);
      liveError.replaceChildren();
    } catch (err) {
      if (err?.name !== "AbortError") showError(liveError, err, "Availability could not be refreshed");
    }
  }
  ctx.every(LIVE_AVAILABILITY_MS, poll);

  add(ctx.root, 
    h("p", { class: "breadcrumb" }, h("a", { href: "#/" }, "← All products")),
    h("article", { class: "product-detail card" },
      heading(product.name),
      h("p", { class: "sku muted" }, `SKU ${product.sku}`, categoryName ? ` · ${categoryName}` : ""),
      product.description ? h("p", { class: "description" }, product.description) : null,
      h("p", { class: "price big" }, money(product.price, product.currency)),
      h("p", { class: "live" }, "Availability: ", h("span", { "aria-live": "polite" }, avail), stockLine,
        h("span", { class: "muted small" }, " · updates by itself")),
      liveError,
      messages,
      form),
  );
}
