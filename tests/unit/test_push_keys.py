"""Web Push's pure parts: which endpoints the server may post to, the VAPID key's forms and file, and the decline
capability (bound to one call and its callee, expiring)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from peercall.auth.vapid import parse_private_key, vapid_key
from peercall.config import Settings
from peercall.hub.push import DEFAULT_SERVICES, VapidKey, b64url, endpoint_allowed, unb64url

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("endpoint", "allowed"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", True),
        ("https://web.push.apple.com/QO2", True),
        ("https://wns2-par02p.notify.windows.com/w/?token=x", True),
        ("https://updates.push.services.mozilla.com/wpush/v2/x", True),
        ("http://fcm.googleapis.com/fcm/send/abc", False),  # not https
        ("https://fcm.googleapis.com:8443/x", False),  # another port
        ("https://push.apple.com.evil.example/x", False),
        ("https://evilpush.apple.com/x", False),  # `*.push.apple.com` means under it
        ("https://user:pw@fcm.googleapis.com/x", False),
        ("https://127.0.0.1/x", False),
        ("not a url", False),
        ("https://[::1/x", False),
    ],
)
def test_only_listed_push_services_are_posted_to(endpoint: str, allowed: bool) -> None:
    """A subscription's endpoint must be on a listed service: scheme, host (or `*.` suffix) and port."""
    assert endpoint_allowed(endpoint, DEFAULT_SERVICES) is allowed


def test_a_loopback_service_is_allowed_only_on_its_port() -> None:
    assert endpoint_allowed("http://127.0.0.1:4000/push/x", ["http://127.0.0.1:4000"])
    assert not endpoint_allowed("http://127.0.0.1:4001/push/x", ["http://127.0.0.1:4000"])


def test_the_decline_capability_declines_its_call_only_until_it_expires() -> None:
    """Made for (call, callee, expiry): another call, a changed byte, another key, or a late use are refused."""
    key = VapidKey(ec.generate_private_key(ec.SECP256R1()))
    token = key.decline_token("call1", "bob", NOW + 60)
    assert key.check_decline(token, "call1", NOW) == "bob"
    with pytest.raises(ValueError, match="another call"):
        key.check_decline(token, "call2", NOW)
    with pytest.raises(ValueError, match="expired"):
        key.check_decline(token, "call1", NOW + 61)
    with pytest.raises(ValueError, match="not a decline capability of this server"):
        VapidKey(ec.generate_private_key(ec.SECP256R1())).check_decline(token, "call1", NOW)
    body, mac = token.split(".")
    with pytest.raises(ValueError):
        key.check_decline(f"{body[:-1]}A.{mac}", "call1", NOW)
    for junk in (None, 7, "", "a.b.c", "x" * 600):
        with pytest.raises(ValueError):
            key.check_decline(junk, "call1", NOW)


def test_the_vapid_key_is_made_once_into_the_data_folder(tmp_path: Path) -> None:
    """Unset: a key is made into vapid.pem (0600 in a 0700 folder) and read back the next time."""
    folder = tmp_path / "data"
    first = vapid_key(None, folder)
    assert stat.S_IMODE(os.stat(folder / "vapid.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    again = vapid_key(None, folder)
    assert VapidKey(first).public_key == VapidKey(again).public_key


def test_the_vapid_key_setting_takes_pem_or_raw_base64url() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    raw = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    public = VapidKey(key).public_key
    assert VapidKey(parse_private_key(pem)).public_key == public
    assert VapidKey(vapid_key(raw, Path("/nonexistent"))).public_key == public
    assert len(unb64url(public)) == 65
    with pytest.raises(ValueError, match="P-256"):
        parse_private_key("not a key")


def test_push_is_refused_in_open_mode_and_services_are_checked() -> None:
    """In open mode anyone could take a user's pushes: the server does not start."""
    with pytest.raises(ValidationError, match="push needs auth=token or auth=accounts"):
        Settings(push=True)
    with pytest.raises(ValidationError, match="push_services"):
        Settings(auth="token", auth_secret="x" * 32, push=True, push_services="ftp://x")
    ok = Settings(auth="token", auth_secret="x" * 32, push=True, push_services="https://*.example.org,http://[::1]:9")
    assert ok.push_services == ["https://*.example.org", "http://[::1]:9"]


def test_a_bad_vapid_key_stops_the_server_with_a_clear_message_and_no_key_material(tmp_path: Path) -> None:
    """`peercall serve` exits 2 naming the setting; the value given is not echoed."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "PEERCALL_AUTH": "token",
        "PEERCALL_AUTH_SECRET": "x" * 32,
        "PEERCALL_PUSH": "true",
        "PEERCALL_VAPID_PRIVATE_KEY": "secret-nonsense-value",
        "PEERCALL_PORT": "0",
        "PEERCALL_HOST": "127.0.0.1",
        "PEERCALL_DATABASE_URL": "memory://",
        "XDG_DATA_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "peercall", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "PEERCALL_VAPID_PRIVATE_KEY: not a PEM or base64url P-256 private key" in done.stderr
    assert "secret-nonsense-value" not in done.stderr + done.stdout
