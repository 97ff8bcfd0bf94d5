"""The engine link's sealing, done in Python for tests that speak on the link as an engine would
(wire/src/cipher.rs and wire/src/sealed.rs are the real thing): the key is HKDF-SHA256 of the
link's secret, each piece is XChaCha20-Poly1305 with a random 24-byte nonce in front, built from
the `cryptography` package's ChaCha20-Poly1305 and HChaCha20 (RFC draft-irtf-cfrg-xchacha)."""
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_PURPOSE = b"rustpx engine link: XChaCha20-Poly1305 key, v1"
MASK = 0xFFFFFFFF


def link_key(secret):
    """HKDF-SHA256 (no salt) of the connection file's key, expanded to 32 bytes."""
    prk = hmac.new(b"\0" * 32, secret.encode(), hashlib.sha256).digest()
    return hmac.new(prk, KEY_PURPOSE + b"\x01", hashlib.sha256).digest()


def _hchacha20(key, nonce16):
    state = list(struct.unpack("<4I", b"expand 32-byte k") + struct.unpack("<8I", key) + struct.unpack("<4I", nonce16))

    def quarter(a, b, c, d):
        for x, y, z, shift in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
            state[x] = (state[x] + state[y]) & MASK
            state[z] ^= state[x]
            state[z] = ((state[z] << shift) | (state[z] >> (32 - shift))) & MASK

    for _ in range(10):
        for q in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                  (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
            quarter(*q)
    return struct.pack("<8I", *(state[0:4] + state[12:16]))


def seal(key, plaintext, context):
    nonce = os.urandom(24)
    aead = ChaCha20Poly1305(_hchacha20(key, nonce[:16]))
    return nonce + aead.encrypt(b"\0" * 4 + nonce[16:], plaintext, context)


def _context(header, index, pieces):
    return struct.pack("<QQ", index, pieces) + header


def serialize_sealed(session, msg, key, buffers=()):
    """`session.serialize(msg)` with the content and `buffers` sealed (after the content, as
    the message's buffers) and the signature over the sealed content frame."""
    frames = session.serialize(msg)
    header = frames[2]
    pieces = 1 + len(buffers)
    frames[5] = seal(key, frames[5], _context(header, 0, pieces))
    frames[1] = session.sign(frames[2:6])
    return frames + [seal(key, bytes(b), _context(header, i + 1, pieces)) for i, b in enumerate(buffers)]


def serialize_carrying(session, msg, key, buffers):
    """A piece of a large message (wire/src/sealed.rs `encode_sealed_carrying`): the content
    sealed, the `buffers` (another message's sealed frames) as they are."""
    frames = session.serialize(msg)
    header = frames[2]
    frames[5] = seal(key, frames[5], _context(header, 0, 1 + len(buffers)))
    frames[1] = session.sign(frames[2:6])
    return frames + [bytes(b) for b in buffers]


def open_sealed(frames, key):
    """The (header, content, buffers) of a sealed message the hub sent (frames as a DEALER gets
    them: delimiter, signature, header, parent, metadata, content, buffers); the signature is
    not checked here, the tags are."""
    import json

    header = frames[2]
    pieces = len(frames) - 5

    def unseal(sealed, index):
        nonce, body = sealed[:24], sealed[24:]
        aead = ChaCha20Poly1305(_hchacha20(key, nonce[:16]))
        return aead.decrypt(b"\0" * 4 + nonce[16:], body, _context(header, index, pieces))

    content = json.loads(unseal(frames[5], 0))
    buffers = [unseal(b, i + 1) for i, b in enumerate(frames[6:])]
    return json.loads(header), content, buffers
