// The saga of one order drawn as a timeline.
//
// GET /api/v1/orders/{id}/saga gives `steps` and `compensations` in the order they
// happened. The happy path is reserved → paid → confirmed; while an order is still
// running, the stages not reached yet are drawn greyed out ahead of it. A failed
// order shows the compensation path (each undo action) and ends in a node saying
// why. Step names come from the orders service and are shown as words, so a new
// step appears without a change here; the three stages are recognised by name.

import { h } from "./dom.js";
import { FINAL_STATUSES, duration, timeOnly, words } from "./format.js";

const STAGES = [
  { label: "Stock reserved", match: /reserv|stock/i },
  { label: "Payment taken", match: /pay|charg/i },
  { label: "Confirmed", match: /confirm/i },
];

// Statuses as the orders service writes them (running/completed/failed/cancelled/timed_out/expired
// for steps; requested/acknowledged/abandoned for compensations), plus a few obvious synonyms.
const DONE = /^(completed?|acknowledged|succeeded|success|done|ok|processed|reserved|paid|confirmed|committed|released|refunded|compensated)$/i;
const FAILED = /^(failed|failure|error|declined|rejected|timed_out|timeout|cancelled|expired|abandoned)$/i;

/** True while the saga still has work in flight (so the page keeps polling). */
export function sagaBusy(saga) {
  if (!saga) return true;
  if (/^(reserving|processing|compensating|running|pending)/i.test(saga.status || "")) return true;
  return [...(saga.steps || []), ...(saga.compensations || [])].some((x) => /^(running|requested|pending|started)$/i.test(x.status || ""));
}

function tone(status) {
  if (DONE.test(status || "")) return "done";
  if (FAILED.test(status || "")) return "failed";
  return "active";
}

const MARKS = { done: "✓", failed: "✕", active: "…", waiting: "", undo: "↺", end: "■" };

function node({ kind, title, status, at, toneName }) {
  return h(
    "li",
    { class: ["tl-node", `tl-${kind}`, `tl-${toneName}`], dataset: { kind, tone: toneName } },
    h("span", { class: "tl-mark", "aria-hidden": "true" }, kind === "compensation" ? MARKS.undo : MARKS[toneName] ?? ""),
    h("span", { class: "tl-text" },
      h("strong", { class: "tl-title" }, title),
      status ? h("span", { class: "tl-status" }, words(status)) : null,
      at ? h("time", { class: "tl-time", datetime: at }, timeOnly(at)) : null),
  );
}

/** Milliseconds from the first to the last recorded moment of a saga, or NaN. */
export function sagaDuration(saga, order = null) {
  const times = [...(saga?.steps || []), ...(saga?.compensations || [])]
    .map((x) => new Date(x.at).getTime())
    .filter(Number.isFinite);
  if (order?.created_at) times.push(new Date(order.created_at).getTime());
  if (times.length < 2) return Number.NaN;
  return Math.max(...times) - Math.min(...times);
}

/** The timeline element for an order and its saga (either may be partly missing). */
export function sagaTimeline(order, saga) {
  const steps = saga?.steps || [];
  const compensations = saga?.compensations || [];
  const status = order.status;
  const forward = [];
  // The saga's own log may start with a "place order" step; otherwise draw the start from the order.
  if (!steps.some((step) => /plac/i.test(step.name || ""))) {
    forward.push(node({ kind: "start", title: "Order placed", status: "", at: order.created_at, toneName: "done" }));
  }
  for (const step of steps) {
    forward.push(node({ kind: "step", title: words(step.name, true), status: step.status, at: step.at, toneName: tone(step.status) }));
  }
  const reached = (stage) => steps.some((step) => stage.match.test(step.name || ""));

  if (!FINAL_STATUSES.has(status)) {
    for (const stage of STAGES) {
      if (!reached(stage)) forward.push(node({ kind: "future", title: stage.label, status: "waiting", at: null, toneName: "waiting" }));
    }
  } else if (status === "confirmed" && !reached(STAGES[2])) {
    forward.push(node({ kind: "end", title: "Confirmed", status: "", at: order.updated_at, toneName: "done" }));
  }

  // The compensation path: its own lane under the steps, with the reason as its label.
  const failed = status === "cancelled" || status === "rejected";
  let backward = null;
  if (failed || compensations.length) {
    const reason = order.failure_reason ? words(order.failure_reason) : "";
    const undo = compensations.map((c) =>
      node({ kind: "compensation", title: words(c.action, true), status: c.status, at: c.at, toneName: tone(c.status) }));
    if (failed) {
      undo.push(node({ kind: "end", title: `${words(status, true)}${reason ? ` — ${reason}` : ""}`, status: "", at: order.updated_at, toneName: "failed" }));
    }
    backward = h("div", { class: "tl-lane tl-lane-undo" },
      h("p", { class: "tl-branch", dataset: { kind: "branch" } }, "↳ Compensation", reason ? `: ${reason}` : "",
        /^compensating/i.test(saga?.status || "") ? h("span", { class: "muted small" }, " (still undoing)") : null),
      h("ol", { class: "timeline timeline-undo", "aria-label": "Compensation" }, undo));
  }

  const took = FINAL_STATUSES.has(status) ? sagaDuration(saga, order) : Number.NaN;
  return h("div", { class: "timeline-wrap", dataset: { role: "timeline" } },
    h("ol", { class: "timeline", "aria-label": "Saga steps" }, forward),
    backward,
    Number.isFinite(took) ? h("p", { class: "muted small" }, `From placing to ${words(status)}: ${duration(took)}.`) : null);
}
