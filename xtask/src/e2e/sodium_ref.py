"""WAL-G's libsodium framing, written independently of walg with PyNaCl
(libsodium itself): the reference the end-to-end tests check walg against.

usage: sodium.py encrypt|decrypt KEYSPEC IN OUT
KEYSPEC is hex:<64 hex digits>, base64:<standard base64> or none:<text>,
turned into 32 key bytes by WAL-G's WALG_LIBSODIUM_KEY_TRANSFORM rules.
"""
import base64
import binascii
import sys

from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_ABYTES as AB,
    crypto_secretstream_xchacha20poly1305_HEADERBYTES as HB,
    crypto_secretstream_xchacha20poly1305_TAG_FINAL as TAG_FINAL,
    crypto_secretstream_xchacha20poly1305_TAG_MESSAGE as TAG_MESSAGE,
    crypto_secretstream_xchacha20poly1305_init_pull as init_pull,
    crypto_secretstream_xchacha20poly1305_init_push as init_push,
    crypto_secretstream_xchacha20poly1305_pull as pull,
    crypto_secretstream_xchacha20poly1305_push as push,
    crypto_secretstream_xchacha20poly1305_state as State,
)

CHUNK = 8192


def key_bytes(spec: str) -> bytes:
    kind, _, text = spec.partition(":")
    if kind == "hex":
        k = binascii.unhexlify(text)
    elif kind == "base64":
        k = base64.b64decode(text, validate=True)
    elif kind == "none":
        k = text.encode()
        if len(k) < 25:
            raise ValueError(f"key length must not be less than 25, got {len(k)}")
        return k[:32].ljust(32, b"\0")
    else:
        raise ValueError(f"unknown key spec {kind}")
    if len(k) != 32:
        raise ValueError("key must be exactly 32 bytes")
    return k


def encrypt(data: bytes, key: bytes) -> bytes:
    st = State()
    out = [init_push(st, key)]
    i = 0
    while len(data) - i >= CHUNK:
        out.append(push(st, data[i : i + CHUNK], tag=TAG_MESSAGE))
        i += CHUNK
    out.append(push(st, data[i:], tag=TAG_FINAL))
    return b"".join(out)


def decrypt(blob: bytes, key: bytes) -> bytes:
    """Strict: every piece authenticates, the last one is FINAL, nothing follows."""
    st = State()
    init_pull(st, blob[:HB], key)
    out, pos = [], HB
    while True:
        c = blob[pos : pos + CHUNK + AB]
        if not c:
            raise ValueError("truncated: no FINAL piece")
        pos += len(c)
        m, tag = pull(st, c)
        out.append(m)
        if tag == TAG_FINAL:
            if len(c) == CHUNK + AB:
                raise ValueError("FINAL on a full piece (not WAL-G's framing)")
            if pos != len(blob):
                raise ValueError("data after the FINAL piece")
            return b"".join(out)
        if tag != TAG_MESSAGE or len(c) != CHUNK + AB:
            raise ValueError("short or odd non-final piece")


def main() -> None:
    op, spec, src, dst = sys.argv[1:5]
    key = key_bytes(spec)
    data = open(src, "rb").read()
    result = encrypt(data, key) if op == "encrypt" else decrypt(data, key)
    open(dst, "wb").write(result)


if __name__ == "__main__":
    main()
