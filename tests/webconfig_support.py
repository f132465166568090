"""Shared by the web config tests: passwords and hashes, a test PKI, and promtool's opinion.

Certificates are made with the ``openssl`` CLI. Every file the tests accept is also run through
``promtool check web-config``, so the format stays the one other Prometheus exporters read.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import bcrypt

from exporter.webconfig import Authenticator, Verdict, WebConfig
from tests.promtool import promtool_path

ALICE_PASSWORD = "alice-secret"
BOB_PASSWORD = "bob-secret"
# Cost 4 (bcrypt's minimum) keeps the tests fast; the code does not depend on the cost.
ALICE_HASH = bcrypt.hashpw(ALICE_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
BOB_HASH = bcrypt.hashpw(BOB_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
PREFIX = "--web.config.file: "
TLS_BASE = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"

PKI_FILES = (
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "server2.crt",
    "server2.key",
    "client.crt",
    "client.key",
    "encrypted.key",
    "stranger.crt",
    "stranger.key",
)
_SERVER_EXT = (
    "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    "extendedKeyUsage=serverAuth\n"
    "basicConstraints=CA:FALSE\n"
    "keyUsage=digitalSignature\n"
)
_CLIENT_EXT = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def make_pki(directory: Path) -> None:
    """A test CA; server certs for 127.0.0.1/localhost (CN server, server-2) and a client cert
    signed by it; a client cert from an unrelated CA (stranger); the server key encrypted."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    def ca(name: str, cn: str) -> None:
        openssl(
            "req", "-x509", *_NEW_KEY, "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "2", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def leaf(name: str, cn: str, ext: str, issuer: str, serial: int) -> None:
        (directory / f"{name}.ext").write_text(ext)
        openssl(
            "req", *_NEW_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}"
        )
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.crt", "-CAkey", f"{issuer}.key",
            "-set_serial", str(serial), "-days", "2", "-extfile", f"{name}.ext",
            "-out", f"{name}.crt",
        )  # fmt: skip

    ca("ca", "webconfig test CA")
    ca("stranger-ca", "unrelated CA")
    leaf("server", "server", _SERVER_EXT, "ca", 1001)
    leaf("server2", "server-2", _SERVER_EXT, "ca", 1002)
    leaf("client", "client", _CLIENT_EXT, "ca", 1003)
    leaf("stranger", "stranger", _CLIENT_EXT, "stranger-ca", 1004)
    openssl(
        "pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret",
        "-out", "encrypted.key",
    )  # fmt: skip


def copy_pki(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in PKI_FILES:
        shutil.copyfile(source / name, target / name)


def promtool_check_web_config(path: Path) -> None:
    """Fail unless promtool (the toolkit's own validator) accepts the file too."""
    done = subprocess.run(
        [promtool_path(), "check", "web-config", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, f"promtool rejects {path}: {output}"


def basic(user: str, password: str | bytes) -> str:
    raw = user.encode() + b":" + (password if isinstance(password, bytes) else password.encode())
    return "Basic " + base64.b64encode(raw).decode()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def allowed(config: WebConfig, header: str | None) -> bool:
    """Whether a fresh authenticator for ``config`` lets ``header`` through."""
    return await Authenticator(lambda: config).verify(header) is Verdict.ALLOWED
