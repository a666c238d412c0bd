"""Ed25519 public keys a gateway must refuse: non-canonical or of small order.

A public key is a point on the curve, encoded as its y coordinate with the
sign of x in the top bit.  Two kinds of encoding let a signature "verify"
with no private key behind it, or with more than one message for one
signature, and libraries differ on whether they refuse them:

* **small order**: the identity point and the other seven points of the
  curve's 8-torsion.  With A = identity, a "signature" R = identity, S = 0
  verifies for every message (the audit's app code);
* **non-canonical**: y >= p, or the encoding of x = 0 with the sign bit
  set; the same point has a second encoding.

:func:`check_public_key` does the arithmetic here (the curve's own
equations, no library), so the rule is the same wherever keys are loaded:
the platform's key set, pass keys, members' app keys.
"""

from __future__ import annotations

#: The field prime, and the curve's d (-121665/121666 mod p).
P = 2**255 - 19
D = (-121665 * pow(121666, P - 2, P)) % P
#: sqrt(-1) mod p.
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _decode(raw: bytes) -> tuple[int, int]:
    """The point (x, y) ``raw`` encodes; ValueError when it is not a canonical point."""
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    value = int.from_bytes(raw, "little")
    sign, y = value >> 255, value & ((1 << 255) - 1)
    if y >= P:
        raise ValueError("not a canonical Ed25519 key (y is not below p)")
    # x^2 = (y^2 - 1) / (d y^2 + 1)
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = (u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P)) % P
    if (v * x * x) % P != u:
        x = (x * SQRT_M1) % P
        if (v * x * x) % P != u:
            raise ValueError("not a point on Ed25519")
    if x == 0 and sign:
        raise ValueError("not a canonical Ed25519 key (x = 0 with its sign bit set)")
    if x & 1 != sign:
        x = P - x
    return x, y


def _double(x: int, y: int) -> tuple[int, int]:
    """2 * (x, y) on the twisted Edwards curve -x^2 + y^2 = 1 + d x^2 y^2 (affine)."""
    xx, yy, xy = x * x % P, y * y % P, x * y % P
    dxy = D * xx * yy % P
    return (2 * xy * pow(1 + dxy, P - 2, P)) % P, ((yy + xx) * pow(1 - dxy, P - 2, P)) % P


def check_public_key(raw: bytes) -> None:
    """Raise ValueError unless ``raw`` is a canonical Ed25519 key of large order."""
    x, y = _decode(raw)
    for _ in range(3):  # [8]P
        x, y = _double(x, y)
    if (x, y) == (0, 1):
        raise ValueError("an Ed25519 key of small order (it would accept forged signatures)")
