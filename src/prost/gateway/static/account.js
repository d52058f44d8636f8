// Log in and register. Forms are `novalidate`: the API checks the input and its
// `message` is what the person reads, so the rules live in one place.

import * as api from "./api.js";
import { add, field, h } from "./dom.js";
import { busy, heading, messageSlot, showError } from "./ui.js";

/** Only same-page routes are followed after logging in (no open redirect). */
function nextRoute(query) {
  const next = query.get("next") || "";
  return /^#\/[^\s]*$/.test(next) && !next.startsWith("#/login") && !next.startsWith("#/register") ? next : "#/";
}

export function accountView(mode) {
  return async (ctx) => {
    const messages = messageSlot();
    const email = field("Email", { type: "email", name: "email", autocomplete: "email", required: true, spellcheck: "false" });
    const password = field(
      "Password",
      { type: "password", name: "password", autocomplete: mode === "login" ? "current-password" : "new-password", required: true },
      { hint: mode === "register" ? "At least 8 characters." : null },
    );
    const username = mode === "register"
      ? field("Username", { type: "text", name: "username", autocomplete: "username", required: true, spellcheck: "false" }, {
          hint: "3 to 32 letters, digits, dots, dashes or underscores.",
        })
      : null;
    const submit = h("button", { type: "submit", class: "button" }, mode === "login" ? "Log in" : "Create account");
    const form = h("form", { class: "card form narrow", novalidate: true, "aria-labelledby": "account-title" },
      messages, email.wrap, username?.wrap, password.wrap, h("div", { class: "actions" }, submit));

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(submit, async () => {
        messages.replaceChildren();
        try {
          if (mode === "register") {
            await api.register(email.input.value.trim(), username.input.value.trim(), password.input.value);
          }
          const user = await api.login(email.input.value.trim(), password.input.value);
          ctx.flash(mode === "register"
            ? `Welcome, ${user.username}. Your account is ready.`
            : `Welcome back, ${user.username}.`);
          ctx.navigate(nextRoute(ctx.query));
        } catch (err) {
          showError(messages, err, mode === "login" ? "Could not log in" : "Could not register");
          password.input.value = "";
          (mode === "register" && err?.status === 409 ? email.input : password.input).focus();
        }
      }, mode === "login" ? "Logging in…" : "Creating account…");
    });

    const title = heading(mode === "login" ? "Log in" : "Create an account");
    title.id = "account-title";
    add(ctx.root, 
      title,
      form,
      h("p", { class: "aside" },
        mode === "login"
          ? ["No account yet? ", h("a", { href: `#/register${ctx.query.get("next") ? `?next=${encodeURIComponent(ctx.query.get("next"))}` : ""}` }, "Register")]
          : ["Already registered? ", h("a", { href: "#/login" }, "Log in")]),
      h("p", { class: "aside small" },
        "For safety your sign-in is kept only while this page is open: reloading or closing the tab signs you out."),
    );
  };
}
