"""The server's VAPID key pair for Web Push (RFC 8292): from the settings, or kept in the data folder.

`PEERCALL_VAPID_PRIVATE_KEY` may be a PEM private key, or the base64url of the raw 32-byte P-256 private key (what
`web-push generate-vapid-keys` prints). Unset, a key is made into `vapid.pem` in the data folder (mode 0600, in a
0700 folder), as the signing key of accounts mode is (auth/tokens.py `signing_key`): set it, the same on every node,
for a cluster, or each node would sign with a key the browsers did not subscribe with.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY_FILE = "vapid.pem"


def parse_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM or base64url (raw 32 bytes, or DER).

    Raises:
        ValueError: it is neither, or not a P-256 key.
    """
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:
                key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM or base64url P-256 private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("a VAPID key is a P-256 (prime256v1) elliptic-curve key")
    return key


def vapid_key(setting: str | None, folder: Path) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key: `setting` (PEERCALL_VAPID_PRIVATE_KEY) if set, else `folder/vapid.pem`, made if there
    is none.

    Raises:
        ValueError: the key set or kept is not usable.
    """
    if setting:
        return parse_private_key(setting)
    path = folder / KEY_FILE
    try:
        return parse_private_key(path.read_text())
    except FileNotFoundError:
        pass
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return parse_private_key(path.read_text())
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key
