// Catalog management for admins: categories, products, prices, stock, deactivation.
// Every change goes through the public admin endpoints of docs/API.md; the API's
// answer (or its error `message`) is shown next to the form that caused it.

import * as api from "./api.js";
import { add, field, h, mount, selectField } from "./dom.js";
import { money } from "./format.js";
import { busy, errorBox, heading, messageSlot, pager, showError, showOk } from "./ui.js";

const PAGE_SIZE = 20;

const slugify = (text) =>
  text.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");

function categoryForm(onCreated) {
  const messages = messageSlot();
  const name = field("Name", { name: "category_name", autocomplete: "off" });
  const slug = field("Slug", { name: "category_slug", autocomplete: "off", spellcheck: "false" }, { hint: "Lower-case words joined by dashes, used in addresses." });
  let slugEdited = false;
  name.input.addEventListener("input", () => {
    if (!slugEdited) slug.input.value = slugify(name.input.value);
  });
  slug.input.addEventListener("input", () => {
    slugEdited = slug.input.value !== "";
  });
  const submit = h("button", { type: "submit", class: "button" }, "Create category");
  const form = h("form", { class: "card form", novalidate: true, "aria-labelledby": "new-category" },
    h("h2", { id: "new-category" }, "New category"), name.wrap, slug.wrap, h("div", { class: "actions" }, submit), messages);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      try {
        const created = await api.createCategory(name.input.value.trim(), slug.input.value.trim());
        showOk(messages, `Category “${created.name}” created.`);
        form.reset();
        slugEdited = false;
        await onCreated();
      } catch (err) {
        showError(messages, err, "Could not create the category");
      }
    });
  });
  return form;
}

/** The new-product form; `setCategories` refreshes its category choices in place. */
function productForm(categories, onCreated) {
  const messages = messageSlot();
  const sku = field("SKU", { name: "sku", autocomplete: "off", spellcheck: "false" });
  const name = field("Name", { name: "name", autocomplete: "off" });
  const description = field("Description", { name: "description", rows: "3" }, { tag: "textarea" });
  const price = field("Price", { name: "price", inputmode: "decimal", placeholder: "19.99", autocomplete: "off" }, { hint: "A decimal amount, such as 19.99." });
  const currency = field("Currency", { name: "currency", value: "USD", maxlength: "3", autocomplete: "off" });
  const category = selectField("Category", "category_id", [["", "No category"], ...categories.map((c) => [c.id, c.name])], "");
  const stock = field("Stock", { type: "number", name: "stock", min: "0", value: "0", inputmode: "numeric" }, { hint: "Units on hand." });
  const submit = h("button", { type: "submit", class: "button" }, "Create product");
  const form = h("form", { class: "card form", novalidate: true, "aria-labelledby": "new-product" },
    h("h2", { id: "new-product" }, "New product"),
    sku.wrap, name.wrap, description.wrap,
    h("div", { class: "row" }, price.wrap, currency.wrap),
    h("div", { class: "row" }, category.wrap, stock.wrap),
    h("div", { class: "actions" }, submit), messages);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      const body = {
        sku: sku.input.value.trim(),
        name: name.input.value.trim(),
        description: description.input.value,
        price: price.input.value.trim(),
        currency: currency.input.value.trim().toUpperCase() || "USD",
        stock: Number.parseInt(stock.input.value, 10),
      };
      if (!Number.isFinite(body.stock)) body.stock = stock.input.value;
      if (category.input.value) body.category_id = category.input.value;
      try {
        const created = await api.createProduct(body);
        mount(messages, h("div", { class: "alert alert-ok", role: "status" },
          h("p", null, `Created “${created.name}”. `, h("a", { href: `#/products/${created.id}` }, "See it in the shop."))));
        form.reset();
        currency.input.value = "USD";
        stock.input.value = "0";
        await onCreated();
      } catch (err) {
        showError(messages, err, "Could not create the product");
      }
    });
  });
  const setCategories = (list) => {
    const chosen = category.input.value;
    category.input.replaceChildren(
      ...[["", "No category"], ...list.map((c) => [c.id, c.name])].map(([value, label]) => h("option", { value }, label)),
    );
    category.input.value = list.some((c) => c.id === chosen) ? chosen : "";
  };
  return { form, setCategories };
}

function inlineForm(labelText, inputProps, buttonText, onSubmit) {
  const input = h("input", { ...inputProps, class: "inline-input" });
  input.setAttribute("aria-label", labelText);
  const button = h("button", { type: "submit", class: "button secondary small" }, buttonText);
  const form = h("form", { class: "inline-form", novalidate: true }, input, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(button, () => onSubmit(input.value.trim()));
  });
  return form;
}

function productRow(product, messages, reload) {
  const label = product.name;
  const availability = h("td", { class: "num", dataset: { role: "available" } }, String(product.available));
  const deactivate = h("button", { type: "button", class: "button danger small" }, "Deactivate");
  deactivate.setAttribute("aria-label", `Deactivate ${label}`);
  let armed = null;
  deactivate.addEventListener("click", () => {
    if (!armed) {
      // A second, deliberate click confirms (no modal dialog to trap focus).
      deactivate.textContent = "Confirm";
      deactivate.setAttribute("aria-label", `Confirm: deactivate ${label}`);
      armed = setTimeout(() => {
        armed = null;
        deactivate.textContent = "Deactivate";
        deactivate.setAttribute("aria-label", `Deactivate ${label}`);
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    busy(deactivate, async () => {
      try {
        await api.deactivateProduct(product.id);
        showOk(messages, `“${label}” is deactivated: hidden from the shop and no longer sold.`);
        await reload();
      } catch (err) {
        showError(messages, err, `Could not deactivate “${label}”`);
      }
    });
  });
  return h("tr", { dataset: { productId: product.id } },
    h("th", { scope: "row" }, h("a", { href: `#/products/${product.id}` }, label), h("span", { class: "muted small block" }, product.sku)),
    h("td", null, inlineForm(`Price of ${label} in ${product.currency}`, { name: "price", value: product.price, inputmode: "decimal", size: "8" }, "Save",
      async (value) => {
        try {
          const updated = await api.updateProduct(product.id, { price: value });
          showOk(messages, `Price of “${label}” is now ${money(updated.price, updated.currency)}.`);
        } catch (err) {
          showError(messages, err, `Could not change the price of “${label}”`);
        }
      })),
    h("td", null, inlineForm(`Stock of ${label}`, { name: "stock", type: "number", min: "0", value: String(product.stock), inputmode: "numeric", size: "5" }, "Set",
      async (value) => {
        try {
          const n = Number.parseInt(value, 10);
          const updated = await api.setStock(product.id, Number.isFinite(n) ? n : value);
          availability.textContent = String(updated.available);
          showOk(messages, `Stock of “${label}” set to ${updated.stock} (${updated.available} available).`);
        } catch (err) {
          showError(messages, err, `Could not set the stock of “${label}”`);
        }
      })),
    availability,
    h("td", null, deactivate));
}

export async function catalogAdminView(ctx) {
  let categories = [];
  const topMessages = messageSlot();
  try {
    categories = await api.listCategories({ signal: ctx.signal });
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    topMessages.append(errorBox(err, "Could not load categories"));
  }

  const tableMessages = messageSlot();
  const tableArea = h("div");
  let page = 1;
  let q = "";

  const newProduct = productForm(categories, () => loadTable());
  async function reloadCategories() {
    try {
      categories = await api.listCategories({ signal: ctx.signal });
      newProduct.setCategories(categories);
    } catch (err) {
      if (err?.name !== "AbortError") showError(topMessages, err, "Could not reload categories");
    }
  }
  const formsArea = h("div", { class: "admin-forms" }, categoryForm(reloadCategories), newProduct.form);

  let loads = 0;
  async function loadTable() {
    const mine = ++loads; // an older, slower answer must not replace a newer one
    try {
      const list = await api.listProducts({ q, page, page_size: PAGE_SIZE, sort: "-created_at" }, { signal: ctx.signal });
      if (mine !== loads) return;
      mount(tableArea,
        list.total === 0
          ? h("p", { class: "empty" }, q ? "No products match." : "No products yet: create the first one above.")
          : h("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-label": "Products table" },
            h("table", { class: "admin-table" },
              h("caption", { class: "visually-hidden" }, "Products, newest first"),
              h("thead", null, h("tr", null, ["Product", "Price", "Stock", "Available", ""].map((t, i) =>
                h("th", { scope: "col", class: i === 3 ? "num" : null }, t || h("span", { class: "visually-hidden" }, "Actions"))))),
              h("tbody", null, list.items.map((p) => productRow(p, tableMessages, loadTable))))),
        pager({ page: list.page, pageSize: list.page_size, total: list.total }, (n) => {
          page = n;
          loadTable();
        }));
    } catch (err) {
      if (err?.name !== "AbortError" && mine === loads) mount(tableArea, errorBox(err, "Could not load products"));
    }
  }

  const search = field("Find a product", { type: "search", name: "admin_q", autocomplete: "off" });
  const searchForm = h("form", { class: "filters compact", role: "search", "aria-label": "Find products to manage" },
    search.wrap, h("div", { class: "actions" }, h("button", { type: "submit", class: "button secondary" }, "Find")));
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    q = search.input.value.trim();
    page = 1;
    loadTable();
  });

  await loadTable();
  add(ctx.root, 
    heading("Catalog"),
    h("p", { class: "muted" }, "Create categories and products, change prices and stock, take products off sale. ",
      h("a", { href: "#/admin" }, "Dashboard →")),
    topMessages,
    formsArea,
    h("section", { "aria-labelledby": "products-title", class: "card" },
      h("h2", { id: "products-title" }, "Products"), searchForm, tableMessages, tableArea),
  );
}
