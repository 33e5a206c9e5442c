"""A throwaway test PKI made with the real ``openssl`` CLI: a CA, a server cert for 127.0.0.1/localhost
and a client cert, so TLS tests talk to a real broker the way a deployed sensor does."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"  # test certificates never need to outlive the test run


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PEM files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl_binary() -> str | None:
    """Path of the openssl CLI, if installed."""
    return shutil.which("openssl")


def _openssl(*args: str | Path, cwd: Path) -> None:
    """Run openssl; a failure raises with its stderr (test set-up bugs must be obvious)."""
    result = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args[:2]))} failed: {result.stderr.strip()}")


def _issue(directory: Path, name: str, subject: str, extensions: str, ca_cert: Path, ca_key: Path) -> None:
    """Key + CSR + certificate signed by the CA, with the given X.509v3 extensions."""
    key, csr, cert, ext = (directory / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    ext.write_text(extensions)
    _openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        subject,
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca_cert,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        DAYS,
        "-sha256",
        "-extfile",
        ext,
        cwd=directory,
    )
    key.chmod(0o600)


def make_test_pki(directory: Path, client_name: str = "sensor") -> Pki:
    """Generate CA, server (SAN 127.0.0.1, localhost) and client (CN = client_name) certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    _openssl(
        "req",
        "-x509",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca_cert,
        "-days",
        DAYS,
        "-sha256",
        "-subj",
        "/CN=earshot test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    _issue(
        directory,
        "server",
        "/CN=localhost",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        ca_cert,
        ca_key,
    )
    _issue(
        directory,
        "client",
        f"/CN={client_name}",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        ca_cert,
        ca_key,
    )
    return Pki(
        ca_cert,
        ca_key,
        directory / "server.crt",
        directory / "server.key",
        directory / "client.crt",
        directory / "client.key",
    )
