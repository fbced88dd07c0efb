"""A self-signed certificate for LAN use: browsers give the microphone only to https pages (or localhost), so a
call between two computers on a LAN needs https even without a domain or a CA.

The certificate names this machine's host name, `localhost`, and every address of its interfaces, so that the
https:// URL printed in the banner works from another computer once its browser accepts the certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def local_addresses() -> list[str]:
    """The machine's interface addresses (IPv4 and IPv6, loopback and link-local left out)."""
    found: set[str] = set()
    try:  # iproute2 knows every interface; getaddrinfo(hostname) often only knows 127.0.1.1
        out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, timeout=5, check=True).stdout
        for link in json.loads(out):
            for info in link.get("addr_info", []):
                found.add(info["local"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        try:
            found.update(str(ai[4][0]) for ai in socket.getaddrinfo(socket.gethostname(), None))
        except OSError:
            pass
    usable = []
    for text in found:
        address = ipaddress.ip_address(text.split("%")[0])
        if not (address.is_loopback or address.is_link_local or address.is_unspecified):
            usable.append(str(address))
    return sorted(usable)


def machine_names() -> tuple[list[str], list[str]]:
    """This machine's names (`localhost`, its host name) and addresses (loopback and every interface's): what the
    self-signed certificate is valid for, and the Hosts the server answers by default (server/guard.py)."""
    return ["localhost", socket.gethostname()], ["127.0.0.1", "::1", *local_addresses()]


def self_signed(directory: Path) -> tuple[Path, Path, list[str]]:
    """Write cert.pem and key.pem into `directory` (reused while still valid for these names).

    Returns (certfile, keyfile, the names and addresses the certificate is valid for).
    """
    directory.mkdir(parents=True, exist_ok=True)
    names, addresses = machine_names()
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    if certfile.exists() and keyfile.exists() and _covers(certfile, names, addresses):
        return certfile, keyfile, names + addresses
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"peercall on {socket.gethostname()}")])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(n) for n in dict.fromkeys(names)] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses)
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    # Created with mode 0600 (no window in which another user could open it), replacing any older key.
    keyfile.unlink(missing_ok=True)
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return certfile, keyfile, names + addresses


def _covers(certfile: Path, names: list[str], addresses: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = set(san.get_values_for_type(x509.DNSName)) | {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=7)
    return fresh and set(names) | set(addresses) <= have
