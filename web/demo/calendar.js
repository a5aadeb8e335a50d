// The live web calendar: a week view of one CalDAV calendar, read through the davpush gateway
// (same origin, the user's credentials on every request) and kept current with WebDAV Push:
// every `notify` (and every reconnect) runs one incremental sync-collection REPORT.
//
// URL: /.davpush/demo/?calendar=/alice/calendar/&week=2026-12-01 (week optional: today's).
// Simplifications of a demo: recurring events show their first occurrence; TZID times are
// shown as local times.

import { basicAuth, discover, PushClient } from "../client/davpush.js";

const CALDAV = "urn:ietf:params:xml:ns:caldav";
const DAV = "DAV:";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const SESSION_KEY = "davpush-demo";

// What tests (and curious people) can look at: window.davpushDemo.
const demo = (window.davpushDemo = { state: "offline", syncs: 0, events: 0, opens: 0, subscriptions: 0, lastUpdate: null });

let session = null; // {user, authorization, calendar}
let collection = null; // discover() result
let push = null;
let syncToken = "";
const events = new Map(); // href -> {href, uid, summary, location, start, end, allDay, fresh}
let weekStart = startOfWeek(params.get("week") ? parseDay(params.get("week")) : new Date());

// ---------------------------------------------------------------- dates

function parseDay(s) {
  const [y, m, d] = s.split("-").map(Number);
  return new Date(y, m - 1, d);
}
function startOfWeek(d) {
  const day = new Date(d.getFullYear(), d.getMonth(), d.getDate());
  const dow = (day.getDay() + 6) % 7; // Monday = 0
  day.setDate(day.getDate() - dow);
  return day;
}
function addDays(d, n) {
  const r = new Date(d);
  r.setDate(r.getDate() + n);
  return r;
}
function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}
const fmtTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const fmtDow = new Intl.DateTimeFormat(undefined, { weekday: "short" });
const fmtMonth = new Intl.DateTimeFormat(undefined, { month: "long", year: "numeric" });
const fmtDay = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const fmtMonthOnly = new Intl.DateTimeFormat(undefined, { month: "long" });
/** "December 2026", "November – December 2026" or "December 2026 – January 2027". */
function weekLabel(first, last) {
  if (first.getMonth() === last.getMonth()) return fmtMonth.format(first);
  if (first.getFullYear() === last.getFullYear()) return `${fmtMonthOnly.format(first)} – ${fmtMonth.format(last)}`;
  return `${fmtMonth.format(first)} – ${fmtMonth.format(last)}`;
}
const fmtClock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });

// ---------------------------------------------------------------- iCalendar

function unfold(text) {
  return text.replace(/\r?\n[ \t]/g, "").split(/\r?\n/);
}
function unescapeText(v) {
  return v.replace(/\\n/gi, "\n").replace(/\\([,;\\])/g, "$1");
}
function parseIcalDate(value, params) {
  const m = /^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z)?)?$/.exec(value);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, z] = m;
  if (h === undefined || params.includes("VALUE=DATE")) return { date: new Date(+y, +mo - 1, +d), allDay: true };
  if (z) return { date: new Date(Date.UTC(+y, +mo - 1, +d, +h, +mi, +s)), allDay: false };
  return { date: new Date(+y, +mo - 1, +d, +h, +mi, +s), allDay: false };
}
/** The VEVENTs of a calendar object (the master only, no RECURRENCE-ID overrides). */
function parseEvents(ics, href) {
  const out = [];
  let cur = null;
  for (const line of unfold(ics)) {
    if (line === "BEGIN:VEVENT") cur = { href, summary: "(no title)", location: "" };
    else if (line === "END:VEVENT") {
      if (cur && cur.start && !cur.recurrenceId) {
        if (!cur.end) cur.end = cur.allDay ? addDays(cur.start, 1) : new Date(cur.start.getTime() + 3600e3);
        out.push(cur);
      }
      cur = null;
    } else if (cur) {
      const colon = line.indexOf(":");
      if (colon < 0) continue;
      const [name, ...ps] = line.slice(0, colon).split(";");
      const value = line.slice(colon + 1);
      const p = ps.map((x) => x.toUpperCase());
      switch (name.toUpperCase()) {
        case "UID": cur.uid = value; break;
        case "SUMMARY": cur.summary = unescapeText(value); break;
        case "LOCATION": cur.location = unescapeText(value); break;
        case "RECURRENCE-ID": cur.recurrenceId = value; break;
        case "DTSTART": {
          const d = parseIcalDate(value, p);
          if (d) { cur.start = d.date; cur.allDay = d.allDay; }
          break;
        }
        case "DTEND": {
          const d = parseIcalDate(value, p);
          if (d) cur.end = d.date;
          break;
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- WebDAV

async function dav(method, url, body, headers = {}) {
  const resp = await fetch(url, {
    method,
    body,
    cache: "no-store",
    headers: {
      Authorization: session.authorization,
      "Content-Type": "application/xml; charset=utf-8",
      "X-Requested-With": "XMLHttpRequest",
      ...headers,
    },
  });
  return resp;
}

/** One sync-collection REPORT (RFC 6578) from the last token; a full one if the token is refused. */
async function syncOnce() {
  const body =
    `<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:" xmlns:c="${CALDAV}">` +
    `<d:sync-token>${syncToken.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</d:sync-token><d:sync-level>1</d:sync-level>` +
    "<d:prop><d:getetag/><c:calendar-data/></d:prop></d:sync-collection>";
  const resp = await dav("REPORT", collection.url, body);
  if (resp.status !== 207) {
    if (syncToken && (resp.status === 403 || resp.status === 409 || resp.status === 400)) {
      // The token expired on the server (valid-sync-token): start over.
      syncToken = "";
      events.clear();
      return syncOnce();
    }
    throw new Error(`REPORT: HTTP ${resp.status}`);
  }
  const initial = !syncToken;
  const doc = new DOMParser().parseFromString(await resp.text(), "application/xml");
  const changed = [];
  for (const r of doc.getElementsByTagNameNS(DAV, "response")) {
    const href = r.getElementsByTagNameNS(DAV, "href")[0]?.textContent.trim();
    if (!href) continue;
    const data = r.getElementsByTagNameNS(CALDAV, "calendar-data")[0];
    const status = [...r.children].find((c) => c.localName === "status")?.textContent || "";
    const known = events.has(href);
    const gone = known ? events.get(href).summary : null;
    for (const key of [...events.keys()]) if (key === href || key.startsWith(href + "#")) events.delete(key);
    if (status.includes(" 404") || !data) {
      if (gone && !initial) changed.push({ summary: gone, verb: "removed" });
      continue;
    }
    parseEvents(data.textContent, href).forEach((ev, i) => {
      ev.fresh = !initial;
      events.set(i ? `${href}#${i}` : href, ev);
      changed.push({ summary: ev.summary, verb: known ? "changed" : "added" });
    });
  }
  syncToken = doc.getElementsByTagNameNS(DAV, "sync-token")[0]?.textContent.trim() || "";
  demo.syncs += 1;
  demo.events = events.size;
  if (!initial) for (const c of changed) log(`“${c.summary}” ${c.verb}`);
}

let syncing = false;
let syncAgain = false;
/** Coalesced: a burst of notifications runs at most one more sync after the running one. */
async function sync() {
  if (syncing) {
    syncAgain = true;
    return;
  }
  syncing = true;
  try {
    do {
      syncAgain = false;
      await syncOnce();
      render();
    } while (syncAgain);
  } catch (e) {
    log(`sync failed: ${e.message}`);
  } finally {
    syncing = false;
  }
}

// ---------------------------------------------------------------- rendering

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function colorOf(ev) {
  let h = 0;
  for (const c of ev.uid || ev.href) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `c${h % 5}`;
}
function eventCard(ev) {
  const card = el("div", `event ${colorOf(ev)}${ev.allDay ? " all-day" : ""}${ev.fresh ? " fresh" : ""}`);
  card.dataset.uid = ev.uid || "";
  card.dataset.href = ev.href;
  card.append(el("div", "time", ev.allDay ? "All day" : `${fmtTime.format(ev.start)} – ${fmtTime.format(ev.end)}`));
  card.append(el("div", "title", ev.summary));
  if (ev.location) card.append(el("div", "where", ev.location));
  ev.fresh = false;
  return card;
}
function render() {
  const days = [...Array(7)].map((_, i) => addDays(weekStart, i));
  const end = addDays(weekStart, 7);
  $("week-label").textContent = weekLabel(weekStart, addDays(weekStart, 6));
  const sorted = [...events.values()].sort((a, b) => (b.allDay - a.allDay) || (a.start - b.start));
  const week = $("week");
  week.replaceChildren();
  const now = new Date();
  for (const day of days) {
    const col = el("div", `day${sameDay(day, now) ? " today" : ""}`);
    col.setAttribute("role", "gridcell");
    const head = el("div", "day-head");
    head.append(el("div", "dow", fmtDow.format(day)), el("div", "num", String(day.getDate())));
    const body = el("div", "day-body");
    const next = addDays(day, 1);
    for (const ev of sorted) if (ev.start < next && ev.end > day && !(ev.allDay && ev.end <= day)) body.append(eventCard(ev));
    col.append(head, body);
    week.append(col);
  }
  const agenda = $("agenda");
  agenda.replaceChildren();
  const upcoming = sorted.filter((ev) => ev.end > weekStart && ev.start < addDays(end, 14)).sort((a, b) => a.start - b.start).slice(0, 8);
  if (!upcoming.length) agenda.append(el("li", "empty", "Nothing planned."));
  for (const ev of upcoming) {
    const li = el("li");
    li.append(el("div", "when", ev.allDay ? fmtDay.format(ev.start) : `${fmtDay.format(ev.start)}, ${fmtTime.format(ev.start)}`));
    li.append(el("div", "title", ev.summary));
    agenda.append(li);
  }
}
function log(text) {
  const li = el("li");
  li.append(el("time", "", fmtClock.format(new Date())), document.createTextNode(text));
  $("activity").prepend(li);
  while ($("activity").children.length > 6) $("activity").lastChild.remove();
}
function setStatus(state, text) {
  demo.state = state;
  $("status").dataset.state = state;
  $("status-text").textContent = text;
}

// ---------------------------------------------------------------- wiring

async function start() {
  $("login").hidden = true;
  $("calendar").hidden = false;
  $("user").hidden = $("logout").hidden = false;
  $("user").textContent = session.user;
  setStatus("reconnecting", "Connecting…");
  collection = await discover(session.calendar, { authorization: session.authorization });
  $("cal-name").textContent = collection.displayName || session.calendar;
  document.title = `${$("cal-name").textContent} · Calendar`;
  await sync();
  push = PushClient.viaGateway({ authorization: session.authorization });
  push.addEventListener("state", (e) => {
    const { state, delay } = e.detail;
    if (state === "open") {
      demo.opens += 1;
      setStatus("live", "Live");
    } else if (state === "waiting") {
      setStatus("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s`);
    } else if (state === "connecting") setStatus("reconnecting", "Connecting…");
  });
  push.addEventListener("subscribed", () => {
    demo.subscriptions += 1;
    setStatus("live", "Live");
  });
  push.addEventListener("update", (e) => {
    demo.lastUpdate = { at: Date.now(), syncToken: e.detail.syncToken };
    sync();
  });
  push.addEventListener("resync", () => {
    log("reconnected, catching up");
    sync();
  });
  push.addEventListener("error", (e) => log(`push: ${e.detail.message}`));
  push.watch(collection);
}

async function login(ev) {
  ev.preventDefault();
  const calendar = $("f-calendar").value.trim();
  const user = $("f-user").value.trim();
  const authorization = basicAuth(user, $("f-password").value);
  $("login-error").textContent = "";
  session = { user, authorization, calendar: calendar.endsWith("/") ? calendar : calendar + "/" };
  try {
    await start();
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  } catch (e) {
    const tried = session;
    signedOut();
    $("login-error").textContent = loginError(e, tried);
  }
}

/** Back to the login form: no user, no Sign out, offline. */
function signedOut() {
  if (push) push.close();
  push = null;
  session = null;
  collection = null;
  syncToken = "";
  events.clear();
  $("calendar").hidden = true;
  $("login").hidden = false;
  $("user").hidden = $("logout").hidden = true;
  $("user").textContent = "";
  $("cal-name").textContent = "Calendar";
  document.title = "Calendar · davpush";
  setStatus("offline", "Offline");
}

/** What went wrong when `tried` ({user, calendar}) signed in, in one sentence. */
function loginError(e, tried) {
  const status = e.status;
  if (e.code === "unreachable") return "The server could not be reached. Check the network connection and try again.";
  if (status === 401) return "Wrong user name or password.";
  if (status === 403) return `${tried.user} may not read the calendar ${tried.calendar}.`;
  if (status === 404) return `There is no calendar at ${tried.calendar}.`;
  if (e.code === "no_push") return `${e.message}.`;
  if (status) return `The server answered HTTP ${status} for ${tried.calendar}.`;
  return e.message;
}

$("login-form").addEventListener("submit", login);
$("prev").addEventListener("click", () => { weekStart = addDays(weekStart, -7); render(); });
$("next").addEventListener("click", () => { weekStart = addDays(weekStart, 7); render(); });
$("today").addEventListener("click", () => { weekStart = startOfWeek(new Date()); render(); });
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(SESSION_KEY);
  if (push) push.close();
  location.reload();
});

const saved = sessionStorage.getItem(SESSION_KEY);
if (saved) {
  session = JSON.parse(saved);
  const tried = session;
  start().catch((e) => {
    sessionStorage.removeItem(SESSION_KEY);
    signedOut();
    $("f-calendar").value = tried.calendar || "";
    $("login-error").textContent = loginError(e, tried);
  });
} else {
  $("f-calendar").value = params.get("calendar") || "";
  $("login").hidden = false;
}
