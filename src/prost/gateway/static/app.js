// prost storefront: the entry module. Hash routes → views, the header, focus.
//
//   #/                      products (search, category, sort, pages)   shop.js
//   #/products/<id>         one product, live availability             shop.js
//   #/login  #/register                                                account.js
//   #/cart                  lines, holds, checkout                     cart.js
//   #/orders  #/orders/<id> orders; status and saga timeline, live     orders.js
//   #/admin                 dashboard (inline SVG charts)              dashboard.js
//   #/admin/catalog         categories, products, prices, stock        admin.js
//
// A view is `async (ctx) => void` that fills `ctx.root`. The router builds each page
// off-screen and swaps it in when ready, aborts the previous page's requests and
// timers (`ctx.signal`, `ctx.every`, `ctx.onCleanup`), and moves focus to the new
// page's heading so keyboard and screen-reader users land at the top.

import * as api from "./api.js";
import { add, h, mount } from "./dom.js";
import { errorBox, heading } from "./ui.js";
import { accountView } from "./account.js";
import { catalogAdminView } from "./admin.js";
import { cartView } from "./cart.js";
import { dashboardView } from "./dashboard.js";
import { orderView, ordersView } from "./orders.js";
import { productListView, productView } from "./shop.js";

const ROUTES = [
  { pattern: /^\/(?:products)?$/, view: productListView, title: "Shop", nav: "shop" },
  { pattern: /^\/products\/([^/]+)$/, view: productView, title: "Product", nav: "shop" },
  { pattern: /^\/login$/, view: accountView("login"), title: "Log in", nav: "login" },
  { pattern: /^\/register$/, view: accountView("register"), title: "Register", nav: "register" },
  { pattern: /^\/cart$/, view: cartView, title: "Cart", nav: "cart", auth: "user" },
  { pattern: /^\/orders$/, view: ordersView, title: "Orders", nav: "orders", auth: "user" },
  { pattern: /^\/orders\/([^/]+)$/, view: orderView, title: "Order", nav: "orders", auth: "user" },
  { pattern: /^\/admin$/, view: dashboardView, title: "Dashboard", nav: "dashboard", auth: "admin" },
  { pattern: /^\/admin\/catalog$/, view: catalogAdminView, title: "Catalog", nav: "catalog", auth: "admin" },
];

const main = document.getElementById("main");
const navEl = document.getElementById("site-nav");
const accountEl = document.getElementById("account");
const announcer = document.getElementById("announcer");

let current = null; // { path, controller, cleanups }
let cartCount = null;
let pendingNotice = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, qs = ""] = raw.split("?", 2);
  return { path: path || "/", query: new URLSearchParams(qs) };
}

export function navigate(hash, { replace = false } = {}) {
  const target = hash.startsWith("#") ? hash : `#${hash}`;
  if (location.hash === target) {
    render();
  } else if (replace) {
    history.replaceState(null, "", target);
    render();
  } else {
    location.hash = target;
  }
}

/** Say something politely to screen readers and show it under the header. */
function announce(text) {
  mount(announcer, text ? h("p", null, text) : null);
}

async function refreshCart() {
  if (!api.currentUser()) {
    cartCount = null;
    renderNav();
    return;
  }
  try {
    const cart = await api.getCart();
    // Only an open cart counts: a cart being checked out belongs to its order now.
    cartCount = cart.status === "open" ? cart.items.reduce((n, line) => n + line.quantity, 0) : 0;
  } catch {
    // The count is a convenience; the cart page itself shows any error in words.
    cartCount = null;
  }
  renderNav();
}

function renderNav() {
  const user = api.currentUser();
  const active = current?.nav;
  const link = (key, href, label, extra = null) =>
    h("li", null, h("a", { href, "aria-current": active === key ? "page" : null, dataset: { nav: key } }, label, extra));
  const items = [link("shop", "#/", "Shop")];
  if (user) {
    items.push(
      link("cart", "#/cart", "Cart", cartCount ? h("span", { class: "count", "aria-label": `, ${cartCount} items` }, String(cartCount)) : null),
      link("orders", "#/orders", "Orders"),
    );
    if (user.role === "admin") {
      items.push(link("catalog", "#/admin/catalog", "Catalog"), link("dashboard", "#/admin", "Dashboard"));
    }
  }
  mount(navEl, h("ul", null, items));
  if (user) {
    mount(
      accountEl,
      h("span", { class: "who" }, "Signed in as ", h("strong", { class: "username" }, user.username || user.email),
        user.role === "admin" ? h("span", { class: "badge role" }, "admin") : null),
      h("button", { type: "button", class: "button secondary small", on: { click: () => api.logout() } }, "Log out"),
    );
  } else {
    mount(
      accountEl,
      h("a", { href: "#/login", class: "button secondary small", "aria-current": active === "login" ? "page" : null }, "Log in"),
      h("a", { href: "#/register", class: "button small", "aria-current": active === "register" ? "page" : null }, "Register"),
    );
  }
}

function teardown() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanups.splice(0)) {
    try {
      fn();
    } catch (err) {
      console.error(err);
    }
  }
}

async function render() {
  const { path, query } = parseHash();
  const previousPath = current?.path;
  const focusedName = document.activeElement?.getAttribute?.("name");
  teardown();

  let route = null;
  let params = [];
  for (const r of ROUTES) {
    const m = path.match(r.pattern);
    if (m) {
      route = r;
      params = m.slice(1).map(decodeURIComponent);
      break;
    }
  }

  const controller = new AbortController();
  const page = { path, nav: route?.nav, controller, cleanups: [] };
  current = page;
  renderNav();

  const user = api.currentUser();
  if (route?.auth && !user) {
    pendingNotice = pendingNotice || "Please log in to see that page.";
    navigate(`#/login?next=${encodeURIComponent(`#${location.hash.slice(1)}`)}`, { replace: true });
    return;
  }

  const root = h("div", { class: "page" });
  const ctx = {
    params,
    query,
    root,
    signal: controller.signal,
    navigate,
    announce,
    refreshCart,
    isCurrent: () => current === page,
    onCleanup: (fn) => page.cleanups.push(fn),
    every(ms, fn) {
      const id = setInterval(() => {
        if (current === page && document.visibilityState !== "hidden") fn();
      }, ms);
      page.cleanups.push(() => clearInterval(id));
    },
    flash: (text) => {
      pendingNotice = text;
    },
  };

  document.title = `${route?.title || "Not found"} · prost`;
  const slow = setTimeout(() => main.setAttribute("aria-busy", "true"), 150);
  try {
    if (!route) {
      add(root, heading("Page not found"), h("p", null, "There is no page at this address. ", h("a", { href: "#/" }, "Back to the shop.")));
    } else if (route.auth === "admin" && user.role !== "admin") {
      add(root, heading("Not allowed"), h("p", { role: "alert" }, "This page is for shop administrators."));
    } else {
      await route.view(ctx);
    }
  } catch (err) {
    if (err?.name === "AbortError" || current !== page) return;
    add(root, errorBox(err, "This page could not be shown"));
  } finally {
    clearTimeout(slow);
  }
  if (current !== page) return;
  main.removeAttribute("aria-busy");
  mount(main, root);
  main.dataset.route = location.hash || "#/"; // which route is on screen (tests wait for it)
  if (pendingNotice) {
    announce(pendingNotice);
    pendingNotice = null;
  }
  if (previousPath === path && focusedName) {
    const again = main.querySelector(`[name="${CSS.escape(focusedName)}"]`);
    if (again) {
      again.focus();
      return;
    }
  }
  // The first page of a visit leaves focus at the top of the document (Tab reaches the
  // skip link first); after a navigation, focus goes to the new page's heading.
  if (previousPath === undefined) return;
  const title = main.querySelector(".page-title");
  (title || main).focus({ preventScroll: false });
  if (previousPath !== path) window.scrollTo(0, 0);
}

api.onSessionChange((reason, detail) => {
  if (reason === "login") {
    refreshCart();
    return;
  }
  cartCount = null;
  renderNav();
  if (reason === "expired") {
    pendingNotice = `Your session has ended${detail ? ` (${detail})` : ""}. Please log in again.`;
    navigate(`#/login?next=${encodeURIComponent(location.hash || "#/")}`);
  } else {
    pendingNotice = "You are logged out.";
    navigate("#/");
  }
});

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector(".page-title") || main).focus();
});

window.addEventListener("hashchange", () => {
  announce("");
  render();
});
render();
