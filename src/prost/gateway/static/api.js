// The one way the pages talk to prost: its public HTTP API (docs/API.md), same origin.
//
// The session token lives only in this module's scope (`token` below): it is not
// exported, not put on `window`, not written to localStorage, sessionStorage or a
// cookie. Code elsewhere can ask *who* is signed in (`currentUser()`), never for the
// token itself. The price is that reloading the page signs the person out; see
// docs/design.md ("Storefront") for why that trade-off was chosen.

let token = null;
let user = null;
let expiryTimer = null;
const listeners = new Set();

/** An error answered by the API, in the contract's shape, or a failure to reach it. */
export class ApiError extends Error {
  constructor({ status, code, message, details = null, retryAfter = null }) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

function decodeClaims(jwt) {
  // Only to read the role when a login answer lacks `user`; the server verifies the token.
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

function notify(reason, detail = null) {
  for (const fn of listeners) fn(reason, detail);
}

/** Call `fn(reason, detail)` whenever someone signs in or out ("login", "logout", "expired"). */
export function onSessionChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** A copy of the signed-in user ({id, email, username, role}) or null. Never the token. */
export function currentUser() {
  return user ? { ...user } : null;
}

export function isAdmin() {
  return user?.role === "admin";
}

function startSession(answer) {
  const claims = decodeClaims(answer.token);
  token = answer.token;
  const u = answer.user || {};
  user = Object.freeze({
    id: u.id ?? claims.user_id ?? claims.sub ?? null,
    email: u.email ?? claims.email ?? "",
    username: u.username ?? claims.username ?? "",
    role: u.role ?? claims.role ?? "customer",
  });
  clearTimeout(expiryTimer);
  const expiresAt = answer.expires_at ? new Date(answer.expires_at).getTime() : (claims.exp ?? 0) * 1000;
  const left = expiresAt - Date.now();
  if (Number.isFinite(left) && left > 0 && left < 2 ** 31 - 1) {
    expiryTimer = setTimeout(() => endSession("expired"), left);
  }
  notify("login");
}

function endSession(reason, detail = null) {
  const had = token !== null;
  token = null;
  user = null;
  clearTimeout(expiryTimer);
  if (had) notify(reason, detail);
}

export function logout() {
  endSession("logout");
}

async function parseError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const retryAfter = response.headers.get("Retry-After");
  if (body && typeof body === "object" && typeof body.message === "string") {
    return new ApiError({
      status: response.status,
      code: body.error || "error",
      message: body.message,
      details: Array.isArray(body.details) ? body.details : null,
      retryAfter,
    });
  }
  // Not the contract's shape (a proxy in front of prost, say): still say what happened.
  return new ApiError({
    status: response.status,
    code: "http_error",
    message: `The server answered ${response.status} ${response.statusText || ""}`.trim(),
    retryAfter,
  });
}

/**
 * Call the API. Resolves to the parsed JSON body (null for 204); rejects with an
 * ApiError carrying the contract's `message`, or with the AbortError of `signal`.
 */
export async function request(method, path, { body, query, idempotencyKey, signal } = {}) {
  let url = `/api/v1${path}`;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  const sentWith = token;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: "omit",
      cache: "no-store",
    });
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    throw new ApiError({
      status: 0,
      code: "network_error",
      message: "The shop's server could not be reached. Check the connection and try again.",
    });
  }
  if (response.status === 204) return null;
  if (!response.ok) {
    const error = await parseError(response);
    // A refused token ends the session (unless another login happened meanwhile).
    if (response.status === 401 && sentWith && sentWith === token) endSession("expired", error.message);
    throw error;
  }
  try {
    return await response.json();
  } catch {
    throw new ApiError({ status: response.status, code: "bad_response", message: "The server sent an answer that could not be read." });
  }
}

// ---- endpoints, one function each (names follow docs/API.md) ----

export async function login(email, password) {
  const answer = await request("POST", "/users/login", { body: { email, password } });
  startSession(answer);
  return currentUser();
}

export const register = (email, username, password) =>
  request("POST", "/users/register", { body: { email, username, password } });

export const listCategories = (opts) => request("GET", "/categories", opts);
export const createCategory = (name, slug) => request("POST", "/categories", { body: { name, slug } });

export const listProducts = (query, opts = {}) => request("GET", "/products", { ...opts, query });
export const getProduct = (id, opts) => request("GET", `/products/${encodeURIComponent(id)}`, opts);
export const createProduct = (body) => request("POST", "/products", { body });
export const updateProduct = (id, body) => request("PATCH", `/products/${encodeURIComponent(id)}`, { body });
export const setStock = (id, stock) => request("PUT", `/products/${encodeURIComponent(id)}/stock`, { body: { stock } });
export const deactivateProduct = (id) => request("DELETE", `/products/${encodeURIComponent(id)}`);

export const getCart = (opts) => request("GET", "/cart", opts);
export const addToCart = (productId, quantity) =>
  request("POST", "/cart/items", { body: { product_id: productId, quantity } });
export const setCartQuantity = (productId, quantity) =>
  request("PUT", `/cart/items/${encodeURIComponent(productId)}`, { body: { quantity } });
export const removeFromCart = (productId) => request("DELETE", `/cart/items/${encodeURIComponent(productId)}`);
export const checkout = (payment, idempotencyKey) =>
  request("POST", "/cart/checkout", { body: { payment }, idempotencyKey });

export const listOrders = (query, opts = {}) => request("GET", "/orders", { ...opts, query });
export const getOrder = (id, opts) => request("GET", `/orders/${encodeURIComponent(id)}`, opts);
export const getSaga = (id, opts) => request("GET", `/orders/${encodeURIComponent(id)}/saga`, opts);
export const cancelOrder = (id) => request("POST", `/orders/${encodeURIComponent(id)}/cancel`);
