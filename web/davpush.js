// davpush.js: WebDAV Push for browsers. A dependency-free ES module.
//
//   import { discover, PushClient, basicAuth } from "/.davpush/client/davpush.js";
//   const auth = basicAuth("alice", "secret");
//   const cal = await discover("/alice/calendar/", { authorization: auth });
//   const push = PushClient.viaGateway({ authorization: auth });
//   push.addEventListener("update", (e) => resync(e.detail.collection));   // a collection changed
//   push.addEventListener("resync", (e) => resync(e.detail.collection));   // missed, cannot replay
//   push.watch(cal);
//   // A server that pushes Web Push itself, through a Director as push service (Web Crypto):
//   const own = await discover("https://dav.example.org/alice/tasks/", { authorization: auth });
//   const viaDirector = PushClient.direct("wss://director.example.org/ws", { authorization: auth });
//   viaDirector.watch(own);      // own.webPush, not behind the gateway: push-service mode
//
// Discovery reads the gateway's push properties with a PROPFIND (the user's credentials). The
// WebSocket: browsers cannot set an Authorization header on it, so either
//  - `PushClient.viaGateway()` (default for pages served by the gateway): a short-lived ticket
//    from `POST /.davpush/ticket` (with the user's credentials), then `/.davpush/ws?ticket=…`
//    on the page's own origin; works whatever `subscription-auth` the Director uses, or
//  - `PushClient.direct(websocketUrl, { token })`: the Director's WebSocket with
//    `?access_token=` (subscription-auth `token`, e.g. the app's pseudo-public token) or none.
// The client reconnects with exponential backoff and full jitter and subscribes every watched
// collection again with the last history position it saw (`since`, docs/protocol.md §4.6): what
// was missed meanwhile arrives as `update`s, in order; what the Director cannot replay (it
// restarted, the outage outlasted its history) arrives as `resync`. It renews subscriptions at
// 80 % of their lifetime, sends application pings (browsers cannot send WebSocket pings) and
// reconnects when the server stays silent for two ping intervals.
// Collections whose server pushes Web Push by itself (not behind the gateway) are received
// through the Director as push service (docs/protocol.md §10; keys and decryption with Web
// Crypto in webpush.js): see `watch`.
// Protocol: docs/protocol.md §4 and §10; behaviour: docs/clients.md.

import { decryptPush, fromB64url, generatePushKeys, parsePushMessage, pushRegisterBody } from "./webpush.js";
export * as webpush from "./webpush.js";

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
 * subscriptionAuth, websocketUrl, vapidPublicKey, webPush }` (`webPush`: the server offers the
 * Web Push transport itself); rejects with a DavPushError (`no_push` when the collection has
 * no topic).
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
    webPush: doc.getElementsByTagNameNS(PUSH, "web-push").length > 0,
  };
}

/** Backoff with full jitter: a random delay in [d/2, d], d doubling from `min` to `max` ms. */
export function backoffDelay(attempt, min = 500, max = 30000) {
  const d = Math.min(max, min * 2 ** Math.min(attempt, 16));
  return d / 2 + Math.random() * (d / 2);
}

/** Registration lifetime assumed when the WebDAV server sends no `Expires` (seconds). */
const DEFAULT_REGISTRATION_SECS = 3600;

/**
 * A push client over the Director's WebSocket. Events (EventTarget):
 *  - `update`  {collection, topic, syncToken, trigger, position}: a watched collection changed
 *    (also each change replayed after a reconnect, in order);
 *  - `resync`  {collection, topic, reason}: sync this collection fully, changes may have been
 *    missed: `reason` is `history` (the Director could not replay: it restarted, or the outage
 *    outlasted its history), `reconnect` (a Director without history), or `push-service`
 *    (a Web Push collection after a reconnect);
 *  - `state`   {state: "connecting"|"open"|"waiting"|"closed", attempt, delay, error};
 *  - `subscribed` {collection, topic, expires, mode: "websocket"|"push-service", endpoint?}
 *    (push-service: after each registration or renewal at the server; `endpoint` at the Director);
 *  - `unregistered` {collection, status}: a push registration removed at its server (on `unwatch`
 *    or `close`); `error` {collection?, error, message}.
 */
export class PushClient extends EventTarget {
  /**
   * `socketUrl`: an async function returning the WebSocket URL for each connection attempt
   * (e.g. with a fresh ticket). Options: `minBackoff`, `maxBackoff` (ms), `refreshRatio` (0.8),
   * `since` (a position saved from `client.position`, e.g. in sessionStorage, to resume from
   * after a page reload), `authorization` (for the WebDAV server in push-service mode),
   * `maxRegistrationMs` (renew push registrations at least this often).
   */
  constructor(socketUrl, options = {}) {
    super();
    this._socketUrl = socketUrl;
    this._opts = { minBackoff: 500, maxBackoff: 30000, refreshRatio: 0.8, ...options };
    this._watched = new Map(); // topic -> collection info (WebSocket subscriptions)
    this._timers = new Map(); // topic -> refresh timer
    this._regs = new Map(); // topic -> push-service registration
    this._pushChain = Promise.resolve();
    this._position = options.since || null;
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
    }, { authorization, ...options, ticketed: true });
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

  /**
   * The last history position seen (`null` before the first): save it to resume after a page
   * reload (`options.since`).
   */
  get position() {
    return this._position;
  }

  /**
   * Watches a collection (the result of `discover`, or `{url, topic}`). A collection whose
   * server offers Web Push itself and is not behind the gateway (`webPush`, no `director` or
   * `websocketUrl`) is watched in push-service mode: a push subscription at the Director
   * (restricted to the server's `vapidPublicKey`), new RFC 8291 keys, a `push-register` with
   * the server (with `options.authorization`), renewed before it expires.
   */
  watch(collection) {
    if (collection.webPush && !collection.director && !collection.websocketUrl) {
      if (this._regs.has(collection.topic)) return;
      const reg = { collection, keys: null, pushId: null, secret: null, location: null, timer: null };
      this._regs.set(collection.topic, reg);
      this._pushSubscribe(reg);
      return;
    }
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

  /** Stops watching a collection (a push registration is removed at its server). */
  async unwatch(collection) {
    const topic = typeof collection === "string" ? collection : collection.topic;
    const reg = this._regs.get(topic);
    if (reg) {
      this._regs.delete(topic);
      await this._unregister(reg);
      return;
    }
    if (!this._watched.delete(topic)) return;
    clearTimeout(this._timers.get(topic));
    this._timers.delete(topic);
    this._send({ type: "unsubscribe", topic });
  }

  /** Unsubscribes everything, removes push registrations, and closes for good. */
  async close() {
    this._closed = true;
    clearTimeout(this._retryTimer);
    clearInterval(this._pingTimer);
    for (const t of this._timers.values()) clearTimeout(t);
    this._timers.clear();
    for (const topic of this._watched.keys()) this._send({ type: "unsubscribe", topic });
    const regs = [...this._regs.values()];
    this._regs.clear();
    const done = Promise.all(regs.map((r) => this._unregister(r)));
    if (typeof window !== "undefined") window.removeEventListener("online", this._onOnline);
    this._setState("closed");
    await done;
    if (this._ws) this._ws.close(1000, "client closed");
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
    const frame = { type: "subscribe", id: topic, topic };
    if (this._position) frame.since = this._position;
    this._send(frame);
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
      this._onFrame(f);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      clearInterval(this._pingTimer);
      this._retry(new DavPushError("unreachable", `WebSocket closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`));
    };
  }

  _onFrame(f) {
    if (f.type === "hello") {
      const reconnected = this._everOpen;
      this._everOpen = true;
      this._attempt = 0;
      this._startPings(f.ping_interval || 30);
      this._setState("open", { connectionId: f.connection_id });
      // The first connection starts from the history's head; later ones resume from the last
      // position seen. A Director without history sends none: then nothing can be replayed.
      if (!f.position) this._position = null;
      else if (!this._position) this._position = f.position;
      for (const [topic, collection] of this._watched) {
        this._subscribe(topic);
        if (reconnected && !this._position) this._emit("resync", { collection: collection.url, topic, reason: "reconnect" });
      }
      for (const reg of this._regs.values()) {
        this._pushSubscribe(reg);
        if (reconnected && reg.pushId) {
          // Pushes that waited within their TTL arrive; others (TTL 0) may have been lost.
          this._emit("resync", { collection: reg.collection.url, topic: reg.collection.topic, reason: "push-service" });
        }
      }
    } else if (f.type === "notify") {
      if (f.position) this._position = f.position;
      const c = this._watched.get(f.topic);
      if (c) {
        this._emit("update", {
          collection: c.url,
          topic: f.topic,
          syncToken: f.sync_token,
          trigger: f.trigger || "content",
          position: f.position,
        });
      }
    } else if (f.type === "resync") {
      if (f.position) this._position = f.position;
      for (const topic of f.topics || []) {
        const c = this._watched.get(topic);
        if (c) this._emit("resync", { collection: c.url, topic, reason: "history" });
      }
    } else if (f.type === "subscribed") {
      const c = this._watched.get(f.topic);
      if (!c) return;
      this._scheduleRefresh(f.topic, f.expires);
      this._emit("subscribed", { collection: c.url, topic: f.topic, expires: f.expires, mode: "websocket" });
    } else if (f.type === "push_subscribed" || f.type === "push") {
      // One at a time, so that updates come out in the order the pushes came in.
      this._pushChain = this._pushChain
        .then(() => this._onPushFrame(f))
        .catch((e) => this._emit("error", { error: "push_service", message: String(e.message || e) }));
    } else if (f.type === "error") {
      const reg = f.id && f.id.startsWith("push:") ? this._regs.get(f.id.slice(5)) : undefined;
      if (reg && (f.error === "not_found" || f.error === "gone")) {
        // The Director forgot the push subscription (it restarted, or it expired): a new one,
        // registered again with the server.
        reg.pushId = null;
        this._pushSubscribe(reg);
        return;
      }
      const c = reg ? reg.collection : f.id ? this._watched.get(f.id) : undefined;
      this._emit("error", { collection: c && c.url, error: f.error, message: f.message });
    }
  }

  // Push-service mode (docs/protocol.md §10).

  _pushSubscribe(reg) {
    const frame = { type: "push_subscribe", id: `push:${reg.collection.topic}` };
    if (reg.pushId) Object.assign(frame, { push_id: reg.pushId, secret: reg.secret });
    else if (reg.collection.vapidPublicKey) frame.vapid_key = reg.collection.vapidPublicKey;
    this._send(frame);
  }

  async _onPushFrame(f) {
    if (f.type === "push") {
      const reg = [...this._regs.values()].find((r) => r.pushId === f.push_id);
      if (!reg || !reg.keys) return;
      let plain;
      try {
        plain = new TextDecoder().decode(await decryptPush(reg.keys, fromB64url(f.data || "")));
      } catch {
        this._emit("error", { collection: reg.collection.url, error: "undecryptable", message: "a push did not decrypt; ignored" });
        return;
      }
      const m = parsePushMessage(plain);
      this._emit("update", {
        collection: reg.collection.url,
        topic: m.topic || reg.collection.topic,
        syncToken: m.syncToken || undefined,
        trigger: "content",
      });
      return;
    }
    const reg = f.id && f.id.startsWith("push:") ? this._regs.get(f.id.slice(5)) : undefined;
    if (!reg) return;
    if (reg.pushId === f.push_id) return; // re-attached: the registration stands
    Object.assign(reg, { pushId: f.push_id, secret: f.secret, endpoint: f.endpoint, keys: await generatePushKeys() });
    await this._register(reg);
  }

  async _register(reg) {
    clearTimeout(reg.timer);
    const { collection } = reg;
    let resp;
    try {
      resp = await request(collection.url, {
        method: "POST",
        headers: headersWith(this._opts.authorization, { "Content-Type": "application/xml; charset=utf-8" }),
        body: pushRegisterBody(reg.endpoint, reg.keys),
      });
    } catch (e) {
      resp = { ok: false, status: 0, error: e };
    }
    if (!this._regs.has(collection.topic)) {
      // Unwatched meanwhile: take it back.
      if (resp.ok && resp.headers.get("Location")) {
        await this._unregister({ ...reg, location: new URL(resp.headers.get("Location"), collection.url).href });
      }
      return;
    }
    if (!resp.ok) {
      const message = resp.error ? resp.error.message : `push-register: HTTP ${resp.status}`;
      this._emit("error", { collection: collection.url, error: "register_failed", message });
      reg.timer = setTimeout(() => this._regs.has(collection.topic) && this._register(reg), 60000);
      return;
    }
    const location = resp.headers.get("Location");
    const old = reg.location;
    reg.location = location ? new URL(location, collection.url).href : null;
    if (old && old !== reg.location) await this._unregister({ ...reg, location: old }, true);
    const parsed = Date.parse(resp.headers.get("Expires") || "");
    const expires = Number.isNaN(parsed) ? Date.now() + DEFAULT_REGISTRATION_SECS * 1000 : parsed;
    // Renew at two thirds of the lifetime (at least a minute from now, at most maxRegistrationMs).
    let after = Math.max((expires - Date.now()) * (2 / 3), 60000);
    if (this._opts.maxRegistrationMs) after = Math.min(after, this._opts.maxRegistrationMs);
    reg.timer = setTimeout(() => this._regs.has(collection.topic) && this._register(reg), Math.min(after, 2 ** 31 - 1));
    this._emit("subscribed", {
      collection: collection.url,
      topic: collection.topic,
      expires: Math.floor(expires / 1000),
      mode: "push-service",
      endpoint: reg.endpoint,
    });
  }

  async _unregister(reg, quiet = false) {
    clearTimeout(reg.timer);
    if (reg.pushId) this._send({ type: "push_unsubscribe", push_id: reg.pushId, secret: reg.secret });
    if (!reg.location) return;
    let status = 0;
    try {
      const resp = await request(reg.location, { method: "DELETE", headers: headersWith(this._opts.authorization) });
      status = resp.status;
    } catch {
      // Unreachable: the registration expires by itself.
    }
    if (!quiet) this._emit("unregistered", { collection: reg.collection.url, status });
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
