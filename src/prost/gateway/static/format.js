// Formatting for people: money from decimal strings (never through floats),
// dates, durations and API codes in words.

const SYMBOLS = { USD: "$", EUR: "€", GBP: "£" };

/** "19.99", "USD" → "$19.99". The amount stays a string: the API's decimal is shown as given. */
export function money(amount, currency = "USD") {
  const text = String(amount ?? "");
  const symbol = SYMBOLS[currency];
  return symbol ? `${symbol}${text}` : `${text} ${currency}`;
}

/** An ISO time → "25 Nov 2025, 12:14:03" in the reader's locale. */
export function dateTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, {
    day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function timeOnly(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Milliseconds → "1.2 s", "350 ms", "2 min 5 s". */
export function duration(ms) {
  if (!Number.isFinite(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return seconds ? `${minutes} min ${seconds} s` : `${minutes} min`;
}

/** Time left until `iso`: "59 min", "4:05" under five minutes, or null once passed. */
export function timeLeft(iso, now = Date.now()) {
  const end = new Date(iso).getTime();
  if (Number.isNaN(end)) return null;
  const left = end - now;
  if (left <= 0) return null;
  const totalSeconds = Math.floor(left / 1000);
  if (totalSeconds < 300) {
    const m = Math.floor(totalSeconds / 60);
    const sec = String(totalSeconds % 60).padStart(2, "0");
    return `${m}:${sec}`;
  }
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  return hours ? `${hours} h ${minutes} min` : `${minutes} min`;
}

/** "payment_declined" → "payment declined"; "reserve_stock" → "Reserve stock" with capital=true. */
export function words(code, capital = false) {
  const text = String(code ?? "").replace(/[_.-]+/g, " ").trim();
  return capital && text ? text[0].toUpperCase() + text.slice(1) : text;
}

export function shortId(id) {
  return String(id ?? "").slice(0, 8);
}

export const FINAL_STATUSES = new Set(["confirmed", "cancelled", "rejected"]);
