// DOM building without HTML strings.
//
// Every piece of text that reaches the page goes through a Text node (or
// `textContent`), never through an HTML parser: a product called
// `<script>alert(1)</script>` is shown as exactly those characters. There is no
// `innerHTML` anywhere in the storefront, and the Content-Security-Policy
// (`require-trusted-types-for 'script'; trusted-types 'none'`) makes the browser
// refuse such string sinks even if one were added by mistake.

const SVG_NS = "http://www.w3.org/2000/svg";

function applyProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "on") {
      for (const [type, handler] of Object.entries(value)) el.addEventListener(type, handler);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" || key === "checked" || key === "selected" || key === "disabled") {
      el[key] = value;
    } else if (/^on/i.test(key) || key === "style" || key === "innerHTML" || key === "outerHTML") {
      // Event handlers as attribute strings and inline styles would both be refused by the CSP.
      throw new Error(`dom: attribute ${key} is not allowed; use { on: { ... } } or a class`);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("a", { href: "#/", class: "x" }, "text", otherNode). Strings become text. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

/** An SVG element, same calling convention as h(). */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

/** Replace everything inside `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
  return el;
}

let uniqueCounter = 0;
/** A fresh id for label/aria wiring. */
export function uid(prefix = "id") {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

/** A labelled form field: returns { wrap, input }. */
export function field(labelText, inputProps = {}, { tag = "input", hint = null } = {}) {
  const id = inputProps.id || uid("f");
  const hintId = hint ? `${id}-hint` : null;
  const input = h(tag, { ...inputProps, id, "aria-describedby": hintId });
  const wrap = h(
    "div",
    { class: "field" },
    h("label", { for: id }, labelText),
    input,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
  );
  return { wrap, input };
}

/** A <select> field; options are [value, label] pairs. */
export function selectField(labelText, name, options, selected, props = {}) {
  const id = props.id || uid("f");
  const select = h(
    "select",
    { ...props, id, name },
    options.map(([value, label]) => h("option", { value, selected: value === selected }, label)),
  );
  select.value = selected ?? "";
  return { wrap: h("div", { class: "field" }, h("label", { for: id }, labelText), select), input: select };
}

/** A random UUID v4 (crypto.randomUUID needs a secure context; this works on plain http too). */
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Append to `el`, skipping null/false (Element.append would write "null"). */
export function add(el, ...children) {
  appendChildren(el, children);
  return el;
}
