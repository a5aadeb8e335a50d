#!/usr/bin/env python3
"""Independent Web Push *sender* for the push-service tests: pywebpush (with http_ece and
py_vapid) encrypts and VAPID-signs a message to a Director push endpoint, as WebDAV-Push
servers (Xandikos, Nextcloud dav_push) do.

  pushsvc.py keys          -> {"private", "p256dh", "auth", "vapid_pem", "vapid_key"}: a user
                              agent's key pair and auth secret, and an application server's
                              VAPID key (PEM private, base64url public)
  pushsvc.py send < JSON   -> sends; input {"endpoint", "p256dh", "auth", "vapid_pem" (optional),
                              "data", "ttl", "topic" (optional), "urgency" (optional)};
                              output {"status", "location", "ttl", "retry_after"}
  pushsvc.py decrypt < JSON -> {"plaintext"}; input {"data" (base64url), "private", "auth"}
"""
import base64
import json
import os
import sys

import http_ece
import py_vapid
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pywebpush import WebPushException, webpush


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def keys():
    ua = ec.generate_private_key(ec.SECP256R1())
    pub = ua.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    vapid = py_vapid.Vapid02()
    vapid.generate_keys()
    vapid_pub = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    print(json.dumps({
        "private": b64e(ua.private_numbers().private_value.to_bytes(32, "big")),
        "p256dh": b64e(pub),
        "auth": b64e(os.urandom(16)),
        "vapid_pem": vapid.private_pem().decode(),
        "vapid_key": b64e(vapid_pub),
    }))


def send():
    req = json.load(sys.stdin)
    sub = {"endpoint": req["endpoint"], "keys": {"p256dh": req["p256dh"], "auth": req["auth"]}}
    headers = {}
    if req.get("topic"):
        headers["Topic"] = req["topic"]
    if req.get("urgency"):
        headers["Urgency"] = req["urgency"]
    kwargs = {}
    if req.get("vapid_pem"):
        kwargs["vapid_private_key"] = py_vapid.Vapid02.from_pem(req["vapid_pem"].encode())
        kwargs["vapid_claims"] = {"sub": "mailto:test@example.org"}
        if req.get("aud"):
            # The push service's origin when the endpoint is posted to another address of it.
            kwargs["vapid_claims"]["aud"] = req["aud"]
    try:
        resp = webpush(sub, data=req["data"], ttl=req["ttl"], headers=headers, **kwargs)
    except WebPushException as e:
        resp = e.response
    print(json.dumps({
        "status": resp.status_code,
        "location": resp.headers.get("Location"),
        "ttl": resp.headers.get("TTL"),
        "retry_after": resp.headers.get("Retry-After"),
    }))


def decrypt():
    req = json.load(sys.stdin)
    d = int.from_bytes(b64d(req["private"]), "big")
    key = ec.derive_private_key(d, ec.SECP256R1())
    plain = http_ece.decrypt(b64d(req["data"]), private_key=key, auth_secret=b64d(req["auth"]), version="aes128gcm")
    print(json.dumps({"plaintext": plain.decode()}))


if __name__ == "__main__":
    {"keys": keys, "send": send, "decrypt": decrypt}[sys.argv[1]]()
