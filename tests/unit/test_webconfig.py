"""``--web.config.file``: what a valid file means.

Every file these tests accept is also checked with ``promtool check web-config``, so the format
stays the one other Prometheus exporters read. Bad files: tests/unit/test_webconfig_errors.py.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

import pytest

from exporter.webconfig import load_web_config, schema
from tests.webconfig_support import (
    ALICE_HASH,
    BOB_HASH,
    TLS_BASE,
    allowed,
    copy_pki,
    make_pki,
    promtool_check_web_config,
    write,
)


@pytest.fixture(scope="module")
def pki_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_pki(directory)
    return directory


@pytest.fixture
def tls_dir(tmp_path: Path, pki_source: Path) -> Path:
    """A fresh copy of the PKI next to where the test writes its config file."""
    copy_pki(pki_source, tmp_path)
    return tmp_path


# --- valid files -------------------------------------------------------------------------------


async def test_no_flag_means_plain_http_without_auth() -> None:
    config = load_web_config(None)
    assert config.ssl_context is None
    assert dict(config.users) == {}
    assert dict(config.headers) == {}
    assert await allowed(config, None)


@pytest.mark.parametrize("text", ["", "{}\n", "# nothing yet\n", "tls_server_config:\n"])
async def test_empty_file_means_no_tls_and_no_auth(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "web.yml", text)
    config = load_web_config(path)
    assert config.ssl_context is None
    assert dict(config.users) == {}
    assert await allowed(config, None)
    promtool_check_web_config(path)


def test_every_supported_key_is_parsed(tls_dir: Path) -> None:
    path = write(
        tls_dir / "web.yml",
        f"""\
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS13
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
  curve_preferences: [X25519, CurveP256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    Strict-Transport-Security: max-age=31536000
    X-Content-Type-Options: nosniff
    X-Frame-Options: deny
    X-XSS-Protection: "1; mode=block"
    Content-Security-Policy: default-src 'none'
basic_auth_users:
  alice: {ALICE_HASH}
  "bob": '{BOB_HASH}'
""",
    )
    config = load_web_config(path)
    context = config.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "webconfig test CA"),),)
    ]
    assert dict(config.users) == {"alice": ALICE_HASH.encode(), "bob": BOB_HASH.encode()}
    assert dict(config.headers) == {
        "Strict-Transport-Security": "max-age=31536000",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "deny",
        "X-XSS-Protection": "1; mode=block",
        "Content-Security-Policy": "default-src 'none'",
    }
    promtool_check_web_config(path)


def test_tls_defaults_are_tls12_to_tls13_without_client_certs(tls_dir: Path) -> None:
    path = write(tls_dir / "web.yml", TLS_BASE)
    context = load_web_config(path).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    promtool_check_web_config(path)


@pytest.mark.parametrize(
    ("client_auth_type", "with_ca", "verify_mode"),
    [
        ("NoClientCert", False, ssl.CERT_NONE),
        ("RequestClientCert", False, ssl.CERT_NONE),
        ("RequestClientCert", True, ssl.CERT_NONE),
        ("RequireAnyClientCert", True, ssl.CERT_REQUIRED),
        ("VerifyClientCertIfGiven", True, ssl.CERT_OPTIONAL),
        ("RequireAndVerifyClientCert", True, ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_types(
    tls_dir: Path, client_auth_type: str, with_ca: bool, verify_mode: ssl.VerifyMode
) -> None:
    ca = "  client_ca_file: ca.crt\n" if with_ca else ""
    path = write(tls_dir / "web.yml", f"{TLS_BASE}  client_auth_type: {client_auth_type}\n{ca}")
    context = load_web_config(path).ssl_context
    assert context is not None
    assert context.verify_mode == verify_mode
    promtool_check_web_config(path)


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, pki_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_pki(pki_source, tmp_path / "conf" / "tls")
    path = write(
        tmp_path / "conf" / "web.yml",
        "tls_server_config:\n"
        "  cert_file: tls/server.crt\n"
        f"  key_file: {tmp_path / 'conf' / 'tls' / 'server.key'}\n"  # absolute stays absolute
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: tls/ca.crt\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_web_config(path).ssl_context is not None
    promtool_check_web_config(path)


def test_blank_header_value_is_left_unset(tmp_path: Path) -> None:
    path = write(
        tmp_path / "web.yml",
        "http_server_config:\n  headers:\n"
        "    X-XSS-Protection: ''\n    X-Frame-Options: sameorigin\n",
    )
    assert dict(load_web_config(path).headers) == {"X-Frame-Options": "sameorigin"}


def test_repr_shows_no_hashes(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    text = repr(load_web_config(path))
    assert "alice" in text
    assert ALICE_HASH not in text
    assert "$2" not in text
    # The validated file model, which holds the hashes too.
    parsed = repr(schema.parse(path, path.read_bytes()))
    assert "$2" not in parsed


def test_certificate_loads_without_memfd(
    tls_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The temporary-directory fallback (non-Linux) works and leaves nothing behind."""
    scratch = tmp_path_factory.mktemp("scratch")
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = write(tls_dir / "web.yml", TLS_BASE)
    assert load_web_config(path).ssl_context is not None
    assert list(scratch.iterdir()) == []
