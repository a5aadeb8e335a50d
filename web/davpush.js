// davpush.js: WebDAV Push for browsers. A dependency-free ES module.
//
//   import { discover, PushClient, basicAuth } from "/.davpush/client/davpush.js";
//   const auth = basicAuth("alice", "secret");
//   const cal = await discover("/alice/calendar/", { authorization: auth });
//   const push = PushClient.viaGateway({ authorization: auth });
//   push.addEventListener("update", (e) => resync(e.detail.collection));   // a collection changed
//   push.addEventListener("resync", (e) => resync(e.detail.collection));   // after a reconnect
//   push.watch(cal);
//
// Discovery reads the gateway's push properties with a PROPFIND (the user's credentials). The
// WebSocket: browsers cannot set an Authorization header on it, so either
//  - `PushClient.viaGateway()` (default for pages served by the gateway): a short-lived ticket
//    from `POST /.davpush/ticket` (with the user's credentials), then `/.davpush/ws?ticket=…`
//    on the page's own origin; works whatever `subscription-auth` the Director uses, or
//  - `PushClient.direct(websocketUrl, { token })`: the Director's WebSocket with
//    `?access_token=` (subscription-auth `token`, e.g. the app's pseudo-public token) or none.
// The client reconnects with exponential backoff and full jitter, subscribes every watched
// collection again after a reconnect (and fires `resync`, since changes may have been missed),
// renews subscriptions at 80 % of their lifetime, sends application pings (browsers cannot send
// WebSocket pings) and reconnects when the server stays silent for two ping intervals.
// Protocol: docs/protocol.md §4; behaviour: docs/clients.md.

const DAV = "DAV:";
const PUSH = "https://bitfire.at/webdav-push";
const DAVPUSH = "urn:davpush:1";
const SUBPROTOCOL = "davpush.v1";

/** `Basic …` for a user and password (UTF-8). */
export function basicAuth(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

/** An error with a machine-readable `code`: `unauthorized`, `no_push`, `unreachable`, `http`. */
export class DavPushError extends Error {
  constructor(code, message, status) {
    super(message);
    this.name = "DavPushError";
    this.code = code;
    this.status = status;
  }
}

function headersWith(authorization, extra) {
  const h = new Headers(extra || {});
  // Asks the gateway to leave out Basic challenges on 401, which would open the browser's own
  // login dialog over the page.
  h.set("X-Requested-With", "XMLHttpRequest");
  if (authorization) h.set("Authorization", authorization);
  return h;
}

async function request(url, init) {
  let resp;
  try {
    resp = await fetch(url, { credentials: "same-origin", cache: "no-store", ...init });
  } catch (e) {
    throw new DavPushError("unreachable", `${url}: ${e.message}`);
  }
  if (resp.status === 401 || resp.status === 403) {
    throw new DavPushError("unauthorized", `${url}: the server refused the credentials (${resp.status})`, resp.status);
  }
  return resp;
}

function firstText(el, ns, name) {
  const found = el.getElementsByTagNameNS(ns, name)[0];
  return found ? found.textContent.trim() : "";
}

/**
 * Reads a collection's push support: OPTIONS (is `webdav-push` in `DAV`?) and a PROPFIND of the
 * push properties. Resolves to `{ url, topic, displayName, syncToken, director, services,
 * subscriptionAuth, websocketUrl, vapidPublicKey }`; rejects with a DavPushError (`no_push` when
 * the collection has no topic).
 */
export async function discover(collectionUrl, { authorization } = {}) {
  const url = new URL(collectionUrl, location.href).href;
  const opts = await request(url, { method: "OPTIONS", headers: headersWith(authorization) });
  const dav = (opts.headers.get("DAV") || "").split(",").map((s) => s.trim());
  const body =
    `<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:p="${PUSH}" xmlns:x="${DAVPUSH}">` +
    "<d:prop><d:displayname/><d:sync-token/><d:resourcetype/><p:topic/><p:transports/>" +
    "<x:director/><x:push-services/><x:subscription-auth/><x:websocket-url/></d:prop></d:propfind>";
  const resp = await request(url, {
    method: "PROPFIND",
    headers: headersWith(authorization, { Depth: "0", "Content-Type": "application/xml; charset=utf-8" }),
    body,
  });
  if (resp.status !== 207) throw new DavPushError("http", `PROPFIND ${url}: HTTP ${resp.status}`, resp.status);
  const doc = new DOMParser().parseFromString(await resp.text(), "application/xml");
  const topic = firstText(doc, PUSH, "topic");
  if (!topic) {
    const why = dav.includes("webdav-push") ? "has no push topic" : "does not offer WebDAV Push";
    throw new DavPushError("no_push", `${url} ${why}`);
  }
  const services = [...doc.getElementsByTagNameNS(DAVPUSH, "service")].map((s) => s.textContent.trim());
  return {
    url,
    topic,
    displayName: firstText(doc, DAV, "displayname"),
    syncToken: firstText(doc, DAV, "sync-token"),
    director: firstText(doc, DAVPUSH, "director"),
    services,
    subscriptionAuth: firstText(doc, DAVPUSH, "subscription-auth") || "token",
    websocketUrl: firstText(doc, DAVPUSH, "websocket-url"),
    vapidPublicKey: firstText(doc, PUSH, "vapid-public-key"),
  };
}

/** Backoff with full jitter: a random delay in [d/2, d], d doubling from `min` to `max` ms. */
export function backoffDelay(attempt, min = 500, max = 30000) {
  const d = Math.min(max, min * 2 ** Math.min(attempt, 16));
  return d / 2 + Math.random() * (d / 2);
}

/**
 * A WebSocket push client. Events (EventTarget):
 *  - `update`  {collection, topic, syncToken, trigger}: a watched collection changed;
 *  - `resync`  {collection, topic}: after a reconnect; sync once, changes may have been missed;
 *  - `state`   {state: "connecting"|"open"|"waiting"|"closed", attempt, delay, error};
 *  - `subscribed` {collection, topic, expires}; `error` {collection?, error, message}.
 */
export class PushClient extends EventTarget {
  /**
   * `socketUrl`: an async function returning the WebSocket URL for each connection attempt
   * (e.g. with a fresh ticket). Options: `minBackoff`, `maxBackoff` (ms), `refreshRatio` (0.8).
   */
  constructor(socketUrl, options = {}) {
    super();
    this._socketUrl = socketUrl;
    this._opts = { minBackoff: 500, maxBackoff: 30000, refreshRatio: 0.8, ...options };
    this._watched = new Map(); // topic -> collection info
    this._timers = new Map(); // topic -> refresh timer
    this._ws = null;
    this._attempt = 0;
    this._closed = false;
    this._everOpen = false;
    this._state = "closed";
    this._retryTimer = null;
    this._pingTimer = null;
    this._heard = 0;
    this._onOnline = () => {
      if (this._state === "waiting") this._connectNow();
    };
    if (typeof window !== "undefined") window.addEventListener("online", this._onOnline);
    queueMicrotask(() => this._connect());
  }

  /** Through the gateway that served the page: tickets from `POST <base>/.davpush/ticket`. */
  static viaGateway({ authorization, base = "/", ...options } = {}) {
    const root = new URL(base, location.href);
    // A ticket names the collections it may watch (the gateway checks each with the WebDAV
    // server): watching another one later means a new ticket, i.e. a reconnect.
    const client = new PushClient(async () => {
      const collections = [...client._watched.values()].map((c) => new URL(c.url, location.href).pathname);
      const resp = await request(new URL(".davpush/ticket", root).href, {
        method: "POST",
        headers: headersWith(authorization, { "Content-Type": "application/json" }),
        body: JSON.stringify({ collections }),
      });
      if (!resp.ok) throw new DavPushError("http", `ticket: HTTP ${resp.status}`, resp.status);
      const { ticket } = await resp.json();
      const ws = new URL(".davpush/ws", root);
      ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
      ws.searchParams.set("ticket", ticket);
      return ws.href;
    }, { ...options, ticketed: true });
    return client;
  }

  /** Straight to the Director's WebSocket (`websocket-url`), with `?access_token=` if given. */
  static direct(websocketUrl, { token, ...options } = {}) {
    return new PushClient(async () => {
      const u = new URL(websocketUrl);
      if (token) u.searchParams.set("access_token", token);
      return u.href;
    }, options);
  }

  /** The connection state: `connecting`, `open`, `waiting` (to reconnect) or `closed`. */
  get state() {
    return this._state;
  }

  /** Watches a collection (the result of `discover`, or `{url, topic}`). */
  watch(collection) {
    const known = this._watched.has(collection.topic);
    this._watched.set(collection.topic, collection);
    if (this._opts.ticketed && !known && this._ws) {
      // The current ticket does not cover it: reconnect with one that does.
      const ws = this._ws;
      this._ws = null;
      clearInterval(this._pingTimer);
      ws.close(1000, "watching another collection");
      this._connectNow();
      return;
    }
    this._subscribe(collection.topic);
  }

  /** Stops watching a collection. */
  unwatch(collection) {
    const topic = typeof collection === "string" ? collection : collection.topic;
    if (!this._watched.delete(topic)) return;
    clearTimeout(this._timers.get(topic));
    this._timers.delete(topic);
    this._send({ type: "unsubscribe", topic });
  }

  /** Unsubscribes everything and closes for good. */
  close() {
    this._closed = true;
    clearTimeout(this._retryTimer);
    clearInterval(this._pingTimer);
    for (const t of this._timers.values()) clearTimeout(t);
    this._timers.clear();
    for (const topic of this._watched.keys()) this._send({ type: "unsubscribe", topic });
    if (this._ws) this._ws.close(1000, "client closed");
    if (typeof window !== "undefined") window.removeEventListener("online", this._onOnline);
    this._setState("closed");
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, extra = {}) {
    this._state = state;
    this._emit("state", { state, attempt: this._attempt, ...extra });
  }

  _send(frame) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  _subscribe(topic) {
    this._send({ type: "subscribe", id: topic, topic });
  }

  _connectNow() {
    clearTimeout(this._retryTimer);
    this._connect();
  }

  async _connect() {
    if (this._closed) return;
    this._setState("connecting");
    let url;
    try {
      url = await this._socketUrl();
    } catch (e) {
      this._retry(e);
      return;
    }
    if (this._closed) return;
    const ws = new WebSocket(url, [SUBPROTOCOL]);
    this._ws = ws;
    ws.onmessage = (ev) => {
      this._heard = Date.now();
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (f.type === "hello") {
        const reconnected = this._everOpen;
        this._everOpen = true;
        this._attempt = 0;
        this._startPings(f.ping_interval || 30);
        this._setState("open", { connectionId: f.connection_id });
        for (const [topic, collection] of this._watched) {
          this._subscribe(topic);
          if (reconnected) this._emit("resync", { collection: collection.url, topic });
        }
      } else if (f.type === "notify") {
        const c = this._watched.get(f.topic);
        if (c) this._emit("update", { collection: c.url, topic: f.topic, syncToken: f.sync_token, trigger: f.trigger || "content" });
      } else if (f.type === "subscribed") {
        const c = this._watched.get(f.topic);
        if (!c) return;
        this._scheduleRefresh(f.topic, f.expires);
        this._emit("subscribed", { collection: c.url, topic: f.topic, expires: f.expires });
      } else if (f.type === "error") {
        const c = f.id ? this._watched.get(f.id) : undefined;
        this._emit("error", { collection: c && c.url, error: f.error, message: f.message });
      }
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      clearInterval(this._pingTimer);
      this._retry(new DavPushError("unreachable", `WebSocket closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`));
    };
  }

  _retry(error) {
    if (this._closed) return;
    const delay = backoffDelay(this._attempt, this._opts.minBackoff, this._opts.maxBackoff);
    this._setState("waiting", { delay, error: String(error && error.message ? error.message : error) });
    this._attempt += 1;
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }

  _scheduleRefresh(topic, expires) {
    clearTimeout(this._timers.get(topic));
    const lifetime = expires * 1000 - Date.now();
    // setTimeout holds at most ~24.8 days; renewing earlier is harmless.
    const after = Math.min(Math.max(lifetime * this._opts.refreshRatio, 1000), 2 ** 31 - 1);
    this._timers.set(
      topic,
      setTimeout(() => {
        if (this._watched.has(topic)) this._subscribe(topic);
      }, after),
    );
  }

  _startPings(intervalSecs) {
    clearInterval(this._pingTimer);
    this._heard = Date.now();
    const every = Math.max(1, intervalSecs) * 1000;
    this._pingTimer = setInterval(() => {
      if (Date.now() - this._heard > 2 * every) {
        // Silent for two intervals: the connection is dead even if the browser has not noticed.
        const ws = this._ws;
        this._ws = null;
        clearInterval(this._pingTimer);
        if (ws) ws.close(4000, "no answer");
        this._retry(new DavPushError("unreachable", "the server stopped answering"));
        return;
      }
      this._send({ type: "ping" });
    }, every / 2);
  }
}
