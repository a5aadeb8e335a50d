#!/usr/bin/env python3
"""Sign a davpush subscription grant (docs/protocol.md §3.3), as an application server does
after its own permission check. Only the standard library.

    python3 examples/grant.py davpush-data/grant-key my-calendar [more topics…]

Prints the grant, valid for 5 minutes (GRANT_SECONDS in the environment to change that).
"""
import base64, hashlib, hmac, json, os, sys, time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_key(path: str) -> bytes:
    """The first key of the key file (one base64url key per line; # comments)."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return base64.urlsafe_b64decode(line + "=" * (-len(line) % 4))
    sys.exit(f"{path}: no key")


def grant(key: bytes, topics: list, expires: int) -> str:
    payload = b64url(json.dumps({"v": 1, "e": expires, "t": topics}, separators=(",", ":")).encode())
    mac = hmac.new(key, b"davpush-grant-v1." + payload.encode(), hashlib.sha256).digest()
    return payload + "." + b64url(mac)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    seconds = int(os.environ.get("GRANT_SECONDS", "300"))
    print(grant(signing_key(sys.argv[1]), sys.argv[2:], int(time.time()) + seconds))
