#!/usr/bin/env python3
"""Independent Web Push oracle for davpush's tests: the user agent's side, written with the
reference implementations (http_ece for RFC 8188/8291, py_vapid + cryptography for RFC 8292).

  webpush.py keys            -> {"private", "p256dh", "auth"} (base64url) of a fresh user agent
  webpush.py check < JSON    -> decrypts a captured push and verifies its VAPID header
     input: {"body", "private", "auth", "authorization", "endpoint", "encoding"}
     output: {"plaintext", "claims", "vapid_key"}; exit 1 with a message if anything is wrong
"""
import base64
import json
import os
import sys
import time
from urllib.parse import urlsplit

import http_ece
import py_vapid
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import serialization


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def keys():
    key = ec.generate_private_key(ec.SECP256R1())
    d = key.private_numbers().private_value.to_bytes(32, "big")
    pub = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    print(json.dumps({"private": b64e(d), "p256dh": b64e(pub), "auth": b64e(os.urandom(16))}))


def check():
    req = json.load(sys.stdin)
    if req.get("encoding") != "aes128gcm":
        sys.exit("Content-Encoding is %r, not aes128gcm" % req.get("encoding"))
    key = ec.derive_private_key(int.from_bytes(b64d(req["private"]), "big"), ec.SECP256R1())
    plaintext = http_ece.decrypt(
        b64d(req["body"]), private_key=key, auth_secret=b64d(req["auth"]), version="aes128gcm"
    )
    header = req["authorization"]
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        sys.exit("Authorization scheme is %r, not vapid" % scheme)
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    # py_vapid splits on single spaces/commas: give it the RFC 8292 form without the space.
    if not py_vapid.Vapid02.verify("vapid t=%s,k=%s" % (parts["t"], parts["k"])):
        sys.exit("VAPID signature does not verify")
    claims = json.loads(b64d(parts["t"].split(".")[1]))
    u = urlsplit(req["endpoint"])
    origin = "%s://%s" % (u.scheme, u.netloc)
    if claims.get("aud") != origin:
        sys.exit("aud %r is not the endpoint's origin %r" % (claims.get("aud"), origin))
    now = time.time()
    if not (now < claims["exp"] <= now + 24 * 3600 + 60):
        sys.exit("exp %r is not within 24 hours" % claims["exp"])
    print(json.dumps({"plaintext": plaintext.decode(), "claims": claims, "vapid_key": parts["k"]}))


if __name__ == "__main__":
    {"keys": keys, "check": check}[sys.argv[1]]()
