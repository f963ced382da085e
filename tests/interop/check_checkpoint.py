#!/usr/bin/env python3
"""Checks a labhours checkpoint as a third party would (docs/evidence.md):
the C2SP signed-note signature, with nothing but the note, the key name and
the 32-byte Ed25519 public key.

Usage: check_checkpoint.py NOTE_FILE KEY_NAME ed25519:<hex>
Prints the verified text and exits 0, or names the failure and exits 1.
"""
import base64
import hashlib
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def open_note(note: str, name: str, public_key: bytes) -> str:
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    key_hash = hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]
    for line in sigs.splitlines():
        dash, signer, blob = line.split(" ")
        blob = base64.b64decode(blob, validate=True)
        if dash == "\u2014" and signer == name and blob[:4] == key_hash:
            Ed25519PublicKey.from_public_bytes(public_key).verify(blob[4:], text.encode())
            return text
    raise ValueError(f"no signature by {name}")


def main() -> int:
    path, name, key = sys.argv[1:4]
    public_key = bytes.fromhex(key.removeprefix("ed25519:"))
    with open(path, encoding="utf-8", newline="") as f:
        note = f.read()
    try:
        text = open_note(note, name, public_key)
    except (ValueError, InvalidSignature) as e:
        print(f"not verified: {type(e).__name__} {e}")
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
