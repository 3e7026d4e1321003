"""Certificates and keys of a federation: an x509 CA, the SuperLink's TLS certificate (SANs), the
SuperNodes' ECDSA keys (OpenSSH format), and the checks that a file holds what it claims."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from fedsign.deploy import DeployError
from fedsign.deploy.processes import LOOPBACK


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _san_entry(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_certificates(certs: Path, names: list[str], days: int = 365) -> None:
    """Write a CA (ca.crt/ca.key) and a SuperLink certificate signed by it whose SANs are
    ``names`` plus localhost and 127.0.0.1 (the ServerApp reaches the SuperLink locally)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if days < 1:
        raise DeployError(f"certificate validity must be at least 1 day, got --days {days}")
    sans = list(dict.fromkeys([*names, "localhost", LOOPBACK]))
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedSign federation CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san_entry(n) for n in sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    private = {"encoding": pem, "format": serialization.PrivateFormat.PKCS8,
               "encryption_algorithm": serialization.NoEncryption()}
    _write_private(certs / "ca.key", ca_key.private_bytes(**private))
    _write_private(certs / "server.key", server_key.private_bytes(**private))
    (certs / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (certs / "server.crt").write_bytes(server_cert.public_bytes(pem))


def make_node_key(keys: Path, name: str) -> Path:
    """Write an ECDSA P-384 key pair in OpenSSH format (what SuperNodes and
    ``flwr supernode register`` read); return the public key's path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(keys / name, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()))
    public = keys / f"{name}.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b"\n")
    return public


def check_file(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a file, else a one-line error naming it and how to make it."""
    if not path.is_file():
        raise DeployError(f"{what} {path} does not exist; {hint}")
    return path


def check_certificate(path: Path, what: str, hint: str) -> Path:
    """``path`` if it holds a PEM certificate, else a one-line error."""
    from cryptography import x509

    check_file(path, what, hint)
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise DeployError(f"{what} {path} is not a PEM certificate; {hint}") from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        when = "expired on" if now > cert.not_valid_after_utc else "is valid only from"
        date = cert.not_valid_after_utc if now > cert.not_valid_after_utc else cert.not_valid_before_utc
        raise DeployError(f"{what} {path} {when} {date:%Y-%m-%d %H:%M} UTC; {hint}")
    return path


def check_node_key(path: Path) -> Path:
    """``path`` if it holds an OpenSSH EC private key, else a one-line error."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    check_file(path, "SuperNode key", "create it with `fedsign federation keys`")
    try:
        key = load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeployError(f"SuperNode key {path} is not an OpenSSH ECDSA private key; "
                       "create one with `fedsign federation keys`")
    return path
