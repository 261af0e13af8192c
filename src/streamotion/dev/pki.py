"""A throwaway certificate authority for the local secure Kafka broker (``streamotion dev kafka --secure``).

It writes PEM files as Strimzi's User Operator hands them to clients (``ca.crt``, ``user.crt``,
``user.key``: an unencrypted PKCS#8 key), plus ``user.pem`` (the key followed by the certificate
chain: the single file a Java client's ``ssl.keystore.type=PEM`` keystore reads). Subjects are
``CN=<name>`` only, so a client's Kafka principal is ``User:CN=<name>`` as with Strimzi's TLS users.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    """One identity's PEM files."""

    name: str
    ca: Path
    cert: Path
    key: Path
    keystore: Path
    """Key + certificate chain in one PEM file (Java's PEM keystore)."""

    @property
    def principal(self) -> str:
        return f"User:CN={self.name}"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write atomically (a reader never sees half a file: rotation replaces files under running clients)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class CertificateAuthority:
    """A self-signed CA in ``directory`` (``ca.crt``, ``ca.key``) issuing client and server certificates."""

    def __init__(self, directory: str | Path, name: str = "streamotion-local-ca") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cert_path = self.directory / "ca.crt"
        key_path = self.directory / "ca.key"
        if self.cert_path.exists() and key_path.exists():
            self.key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            return
        self.key = _key()
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        _write(key_path, _pkcs8(self.key), private=True)
        _write(self.cert_path, self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool = False, directory: str | Path | None = None) -> Identity:
        """A certificate for ``name`` (subject ``CN=name``; a server one also for 127.0.0.1 and localhost)
        in ``directory/name/`` (default: beside the CA). Issuing again replaces the files (rotation)."""
        out = Path(directory or self.directory) / name
        out.mkdir(parents=True, exist_ok=True)
        key = _key()
        now = dt.datetime.now(dt.UTC)
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        ca_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        key_pem = _pkcs8(key)
        ident = Identity(name, out / "ca.crt", out / "user.crt", out / "user.key", out / "user.pem")
        _write(ident.ca, ca_pem)
        # The key before the certificate: a client reloading on a change of user.crt then reads a new pair.
        _write(ident.key, key_pem, private=True)
        _write(ident.keystore, key_pem + cert_pem, private=True)
        _write(ident.cert, cert_pem)
        return ident


def _pkcs8(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
