// webpush.js: the receiving side of Web Push for davpush.js, with Web Crypto only.
//
// A browser page that uses the Director as its push service (docs/protocol.md §10) holds the
// RFC 8291 keys itself: a P-256 key pair (the private key is not extractable) and a 16-byte auth
// secret; the WebDAV server encrypts each push for them (RFC 8188 `aes128gcm`) and the Director
// passes it on still encrypted. Here: the keys, the decryption (ECDH, HKDF-SHA-256, AES-128-GCM),
// the WebDAV-Push `push-register` body and the `push-message` parser.
// Web Crypto needs a secure context (https, or http on localhost/127.0.0.1).

const PUSH = "https://bitfire.at/webdav-push";
const enc = new TextEncoder();

/** base64url (no padding) of bytes. */
export function b64url(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Bytes of base64url (padded or not); throws on anything else. */
export function fromB64url(s) {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Keys for one push subscription: `{ privateKey, publicKey (65 bytes), auth (16 bytes) }`. */
export async function generatePushKeys() {
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey, auth: crypto.getRandomValues(new Uint8Array(16)) };
}

/**
 * Keys from their parts (base64url): the raw private scalar, the uncompressed public point and
 * the auth secret. For test vectors (RFC 8291 Appendix A); pages use `generatePushKeys`.
 */
export async function importPushKeys(privateB64, publicB64, authB64) {
  const publicKey = fromB64url(publicB64);
  const jwk = {
    kty: "EC",
    crv: "P-256",
    d: privateB64,
    x: b64url(publicKey.subarray(1, 33)),
    y: b64url(publicKey.subarray(33, 65)),
    ext: false,
  };
  const privateKey = await crypto.subtle.importKey("jwk", jwk, { name: "ECDH", namedCurve: "P-256" }, false, [
    "deriveBits",
  ]);
  return { privateKey, publicKey, auth: fromB64url(authB64) };
}

async function hkdf(salt, ikm, info, bytes) {
  const key = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, bytes * 8);
  return new Uint8Array(bits);
}

/**
 * Decrypts an `aes128gcm` Web Push message (RFC 8291 §3, RFC 8188 §2) for `keys`; resolves to
 * the plaintext bytes. Rejects (a `DOMException` or an `Error`) when it is truncated, does not
 * authenticate or is badly padded.
 */
export async function decryptPush(keys, body) {
  if (body.length < 21) throw new Error("truncated aes128gcm message");
  const salt = body.subarray(0, 16);
  const rs = new DataView(body.buffer, body.byteOffset + 16, 4).getUint32(0);
  const idlen = body[20];
  if (rs < 18 || body.length < 21 + idlen) throw new Error("truncated aes128gcm message");
  const senderKey = body.subarray(21, 21 + idlen);
  const sender = await crypto.subtle.importKey("raw", senderKey, { name: "ECDH", namedCurve: "P-256" }, false, []);
  const shared = new Uint8Array(
    await crypto.subtle.deriveBits({ name: "ECDH", public: sender }, keys.privateKey, 256),
  );
  const info = concat(enc.encode("WebPush: info\0"), keys.publicKey, senderKey);
  const ikm = await hkdf(keys.auth, shared, info, 32);
  const cekBytes = await hkdf(salt, ikm, enc.encode("Content-Encoding: aes128gcm\0"), 16);
  const nonce = await hkdf(salt, ikm, enc.encode("Content-Encoding: nonce\0"), 12);
  const cek = await crypto.subtle.importKey("raw", cekBytes, "AES-GCM", false, ["decrypt"]);
  const out = [];
  const records = [];
  for (let at = 21 + idlen; at < body.length; at += rs) records.push(body.subarray(at, Math.min(at + rs, body.length)));
  for (let seq = 0; seq < records.length; seq++) {
    const iv = nonce.slice();
    // The record sequence number, XORed into the nonce's last 6 bytes (enough for any message).
    for (let i = 0, s = seq; i < 6; i++, s = Math.floor(s / 256)) iv[11 - i] ^= s & 0xff;
    const plain = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv }, cek, records[seq]));
    let end = plain.length - 1;
    while (end >= 0 && plain[end] === 0) end--;
    const last = seq === records.length - 1;
    if (end < 0 || plain[end] !== (last ? 2 : 1)) throw new Error("bad record padding");
    out.push(plain.subarray(0, end));
  }
  return concat(...out);
}

function xmlEscape(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** The WebDAV-Push `push-register` body for `endpoint` and `keys` (content updates, depth 1). */
export function pushRegisterBody(endpoint, keys) {
  return (
    '<?xml version="1.0" encoding="utf-8"?>' +
    `<push-register xmlns="${PUSH}" xmlns:D="DAV:"><subscription><web-push-subscription>` +
    `<push-resource>${xmlEscape(endpoint)}</push-resource><content-encoding>aes128gcm</content-encoding>` +
    `<subscription-public-key type="p256dh">${b64url(keys.publicKey)}</subscription-public-key>` +
    `<auth-secret>${b64url(keys.auth)}</auth-secret>` +
    "</web-push-subscription></subscription>" +
    "<trigger><content-update><D:depth>1</D:depth></content-update></trigger></push-register>"
  );
}

/** `{ topic, syncToken }` of a decrypted WebDAV-Push `push-message` (each `""` when absent). */
export function parsePushMessage(xml) {
  const doc = new DOMParser().parseFromString(xml, "application/xml");
  const text = (name) => {
    const el = doc.getElementsByTagNameNS(PUSH, name)[0] || doc.getElementsByTagNameNS("DAV:", name)[0];
    return el ? el.textContent.trim() : "";
  };
  return { topic: text("topic"), syncToken: text("sync-token") };
}
