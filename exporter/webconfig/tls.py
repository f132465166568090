"""TLS: the PEM files a config names, the SSLContext built from them, and certificate renewal.

The context is built from the PEM bytes exactly as they were read and checked, never from
whatever is on disk a moment later, so a certificate rewritten during a load cannot slip in
unchecked. Messages never contain key material: OpenSSL's reason code at most.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from exporter.webconfig.errors import fail
from exporter.webconfig.files import PEM_LIMIT, FileReader, UnreadableFile
from exporter.webconfig.schema import TLSServerConfig

SECTION = "tls_server_config"


class EncryptedKeyError(Exception):
    """Raised from the ssl password callback: a daemon must never prompt on a terminal."""


@dataclass(frozen=True)
class TLSFiles:
    """The TLS part of one file version, with the PEM bytes exactly as they were validated."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    ca_pem: bytes | None = field(repr=False)
    verify_mode: ssl.VerifyMode
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion

    @property
    def identity(self) -> bytes:
        """Changes when the server certificate or key does: this part reloads in place."""
        digest = hashlib.sha256()
        for part in (self.cert_pem, self.key_pem):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest()

    @property
    def policy(self) -> tuple[object, ...]:
        """Changes when who may connect does: this part needs a restart (see the watcher)."""
        ca = hashlib.sha256(self.ca_pem).digest() if self.ca_pem is not None else None
        return (self.verify_mode, ca, self.min_version, self.max_version)


def read_tls_files(config_path: Path, tls: TLSServerConfig, reader: FileReader) -> TLSFiles:
    """Read the certificate, key and CA the section names, checking that each holds PEM."""

    def read(key: str, file: Path) -> bytes:
        try:
            return reader.read(file, PEM_LIMIT)
        except UnreadableFile as exc:
            fail(config_path, f"{SECTION}.{key}", f"cannot read {file}: {exc}")

    cert_pem = read("cert_file", tls.cert_file)
    key_pem = read("key_file", tls.key_file)
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        fail(config_path, f"{SECTION}.cert_file", f"{tls.cert_file} holds no PEM certificate")
    if b"PRIVATE KEY-----" not in key_pem:
        fail(config_path, f"{SECTION}.key_file", f"{tls.key_file} holds no PEM private key")
    ca_pem: bytes | None = None
    if tls.client_ca_file is not None:
        ca_pem = read("client_ca_file", tls.client_ca_file)
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            fail(
                config_path,
                f"{SECTION}.client_ca_file",
                f"{tls.client_ca_file} holds no PEM certificate",
            )
    return TLSFiles(
        cert_file=tls.cert_file,
        key_file=tls.key_file,
        ca_file=tls.client_ca_file,
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_pem=ca_pem,
        verify_mode=tls.verify_mode,
        min_version=tls.min_version,
        max_version=tls.max_version,
    )


def build_context(config_path: Path, tls: TLSFiles) -> ssl.SSLContext:
    """A server context for ``tls``; every OpenSSL complaint becomes a WebConfigError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    try:
        load_chain(context, tls)
    except EncryptedKeyError:
        fail(
            config_path,
            f"{SECTION}.key_file",
            f"{tls.key_file} is encrypted; the key must be stored without a passphrase",
        )
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            fail(
                config_path,
                f"{SECTION}.key_file",
                f"{tls.key_file} does not belong to the certificate in {tls.cert_file}",
            )
        fail(
            config_path,
            f"{SECTION}.cert_file",
            f"cannot load {tls.cert_file} with {tls.key_file}: {_ssl_reason(exc)}",
        )
    except OSError as exc:
        fail(
            config_path,
            f"{SECTION}.cert_file",
            f"cannot load the certificate: {exc.strerror or type(exc).__name__}",
        )
    if tls.ca_pem is not None:
        try:
            context.load_verify_locations(cadata=tls.ca_pem.decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:
            reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else "not PEM text"
            fail(
                config_path,
                f"{SECTION}.client_ca_file",
                f"{tls.ca_file} holds no usable PEM CA certificate ({reason})",
            )
    context.verify_mode = tls.verify_mode
    return context


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason code only: short, stable, and free of file contents."""
    if exc.reason:
        return str(exc.reason)
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or ""))
    return text or type(exc).__name__


def _refuse_password() -> bytes:
    raise EncryptedKeyError


def load_chain(context: ssl.SSLContext, tls: TLSFiles) -> None:
    """Load exactly the validated PEM bytes into ``context`` (a new one, or the live one).

    ``load_cert_chain`` only takes paths, and on a live context a failure half-way (new cert,
    old key) would break every new handshake. Loading the already-checked bytes from a private
    copy closes that window when the files are rewritten during a reload.
    """
    with _private_file(tls.cert_pem) as cert, _private_file(tls.key_pem) as key:
        context.load_cert_chain(cert, key, password=_refuse_password)


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` that no other user can read: an in-memory file on Linux."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("web-config", os.MFD_CLOEXEC)
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="web-config-") as directory:  # mode 0700
        path = os.path.join(directory, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
