// Small building blocks shared by the views: error and notice boxes, status
// badges, headings, pagers.

import { ApiError } from "./api.js";
import { h, mount } from "./dom.js";
import { words } from "./format.js";

/** The words to show for an error: the API's `message`, plus what it adds. */
export function errorText(err) {
  if (err instanceof ApiError) {
    let text = err.message;
    if (err.status === 429 && err.retryAfter) text += ` Try again in ${err.retryAfter} s.`;
    return text;
  }
  return err?.message ? `Something went wrong: ${err.message}` : "Something went wrong.";
}

/** An alert box for an error (role=alert: read out as soon as it appears). */
export function errorBox(err, prefix = "") {
  const details = err instanceof ApiError && err.details
    ? err.details
        .map((d) => [Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "", d.msg || ""])
        .filter(([, msg]) => msg)
    : [];
  return h(
    "div",
    { class: "alert alert-error", role: "alert", dataset: { code: err?.code || "error" } },
    h("p", null, prefix ? `${prefix}: ` : "", errorText(err)),
    details.length > 1
      ? h("ul", null, details.map(([where, msg]) => h("li", null, where ? `${where}: ${msg}` : msg)))
      : null,
  );
}

/** Show `err` in `slot` (an element kept for messages), replacing what was there. */
export function showError(slot, err, prefix = "") {
  if (err?.name === "AbortError") return;
  mount(slot, errorBox(err, prefix));
}

export function showOk(slot, text) {
  mount(slot, h("div", { class: "alert alert-ok", role: "status" }, h("p", null, text)));
}

export function clearMessages(slot) {
  slot.replaceChildren();
}

/** A message slot: an empty container that errors and notices are put into. */
export function messageSlot() {
  return h("div", { class: "messages" });
}

/** The page title (h1), focusable so the router can move focus to it. */
export function heading(text, ...extra) {
  return h("h1", { tabindex: "-1", class: "page-title" }, text, ...extra);
}

export function statusBadge(status) {
  return h("span", { class: ["badge", `status-${status}`], dataset: { status } }, words(status));
}

/** Previous / "Page x of y" / Next. `go(page)` is called with the page to show. */
export function pager({ page, pageSize, total }, go) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  if (pages <= 1) return null;
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", class: "button secondary", disabled: page <= 1, on: { click: () => go(page - 1) } }, "← Previous"),
    h("span", { class: "pager-state", "aria-live": "polite" }, `Page ${page} of ${pages}`),
    h("button", { type: "button", class: "button secondary", disabled: page >= pages, on: { click: () => go(page + 1) } }, "Next →"),
  );
}

/** Disable a button while `work` runs; a second click meanwhile does nothing. */
export async function busy(button, work, busyLabel = null) {
  if (button.disabled) return undefined;
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  if (busyLabel) button.textContent = busyLabel;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    if (busyLabel) button.textContent = label;
  }
}
