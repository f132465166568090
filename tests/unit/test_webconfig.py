"""``--web.config.file``: parsing, error messages, credential checks, caching and reloads.

Every file these tests accept is also run through ``promtool check web-config``, so the format
stays the one other Prometheus exporters read. Certificates are made with the ``openssl`` CLI
(``make_pki``, also used by the loopback tests in tests/integration/test_webconfig_http.py).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from _pytest.mark import ParameterSet

from exporter import webconfig
from exporter.webconfig import (
    WebConfig,
    WebConfigError,
    WebConfigWatcher,
    load_web_config,
)
from tests.promtool import promtool_path

ALICE_PASSWORD = "alice-secret"
BOB_PASSWORD = "bob-secret"
# Cost 4 (bcrypt's minimum) keeps the tests fast; the code does not depend on the cost.
ALICE_HASH = bcrypt.hashpw(ALICE_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
BOB_HASH = bcrypt.hashpw(BOB_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
PREFIX = "--web.config.file: "

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


@pytest.fixture(scope="session")
def pki_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_pki(directory)
    return directory


@pytest.fixture
def tls_dir(tmp_path: Path, pki_source: Path) -> Path:
    """A fresh copy of the PKI next to where the test writes its config file."""
    copy_pki(pki_source, tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TLS_BASE = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


# --- valid files -------------------------------------------------------------------------------


def test_no_flag_means_plain_http_without_auth() -> None:
    config = load_web_config(None)
    assert config.ssl_context is None
    assert dict(config.users) == {}
    assert dict(config.headers) == {}
    assert config.check_credentials(None)


@pytest.mark.parametrize("text", ["", "{}\n", "# nothing yet\n", "tls_server_config:\n"])
def test_empty_file_means_no_tls_and_no_auth(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "web.yml", text)
    config = load_web_config(path)
    assert config.ssl_context is None
    assert dict(config.users) == {}
    assert config.check_credentials(None)
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
        HEADERS + "    X-XSS-Protection: ''\n    X-Frame-Options: sameorigin\n",
    )
    assert dict(load_web_config(path).headers) == {"X-Frame-Options": "sameorigin"}


def test_repr_shows_no_hashes(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    text = repr(load_web_config(path))
    assert "alice" in text
    assert ALICE_HASH not in text
    assert "$2" not in text


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


# --- errors ------------------------------------------------------------------------------------

VERIFY = "  client_auth_type: RequireAndVerifyClientCert\n"
USERS = "basic_auth_users:\n"
HEADERS = "http_server_config:\n  headers:\n"
CERT_KEY = "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"


def case(case_id: str, text: str, setting: str, problem: str) -> ParameterSet:
    """One bad file: the setting and the problem its error message must name."""
    return pytest.param(text, setting, problem, id=case_id)


def forbidden_header(name: str) -> ParameterSet:
    text = f"{HEADERS}    {name}: x\n"
    return case(f"forbidden-{name}", text, f"http_server_config.headers.{name}", "cannot be")


TLS = "tls_server_config"
ERRORS = [
    case("yaml-syntax", f"{USERS}  alice: {ALICE_HASH}\n  bob: [{BOB_HASH}\n", "", "invalid YAML"),
    case("yaml-flow", f"basic_auth_users: {{alice: {ALICE_HASH}\n", "", "invalid YAML"),
    case("duplicate-user", f"{USERS}  alice: {ALICE_HASH}\n  alice: {BOB_HASH}\n", "", "duplicate"),
    case("not-a-mapping", "- a\n- b\n", "", "top level must be a mapping"),
    case("unknown-top", "tls_config: {}\n", "tls_config", "unknown setting"),
    case(
        "rate-limit", "rate_limit:\n  interval: 1s\n  burst: 2\n", "rate_limit", "not implemented"
    ),
    case("unknown-tls", TLS_BASE + "  ciphers: []\n", f"{TLS}.ciphers", "unknown setting"),
    case(
        "allowed-sans",
        TLS_BASE + VERIFY + "  client_ca_file: ca.crt\n  client_allowed_sans: [client]\n",
        f"{TLS}.client_allowed_sans",
        "not supported",
    ),
    case("inline-cert", f"{TLS}:\n  cert: x\n  key_file: server.key\n", f"{TLS}.cert", "cert_file"),
    case("tls-not-mapping", f"{TLS}: server.crt\n", TLS, "must be a mapping"),
    case("users-list", "basic_auth_users: [alice]\n", "basic_auth_users", "must be a mapping"),
    case("hash-int", f"{USERS}  alice: 12345\n", "basic_auth_users.alice", "bcrypt hash string"),
    case("plaintext", f"{USERS}  alice: hunter2-plain\n", "basic_auth_users.alice", "not a bcrypt"),
    case(
        "hash-cut", f"{USERS}  alice: {ALICE_HASH[:-3]}\n", "basic_auth_users.alice", "not a bcrypt"
    ),
    case("user-colon", f"{USERS}  'a:b': {ALICE_HASH}\n", "basic_auth_users.a:b", "cannot contain"),
    case("user-int", f"{USERS}  123: {ALICE_HASH}\n", "basic_auth_users", "must be strings"),
    case(
        "cert-missing",
        CERT_KEY.format(cert="missing.crt", key="server.key"),
        f"{TLS}.cert_file",
        "cannot read",
    ),
    case(
        "key-is-dir", CERT_KEY.format(cert="server.crt", key="."), f"{TLS}.key_file", "cannot read"
    ),
    case(
        "cert-not-pem",
        CERT_KEY.format(cert="web.yml", key="server.key"),
        f"{TLS}.cert_file",
        "no PEM certificate",
    ),
    case(
        "key-not-pem",
        CERT_KEY.format(cert="server.crt", key="server.crt"),
        f"{TLS}.key_file",
        "no PEM private key",
    ),
    case(
        "cert-key-mismatch",
        CERT_KEY.format(cert="server.crt", key="ca.key"),
        f"{TLS}.key_file",
        "does not belong",
    ),
    case(
        "key-encrypted",
        CERT_KEY.format(cert="server.crt", key="encrypted.key"),
        f"{TLS}.key_file",
        "encrypted",
    ),
    case("cert-int", CERT_KEY.format(cert=1, key="server.key"), f"{TLS}.cert_file", "non-empty"),
    case("no-key-file", f"{TLS}:\n  cert_file: server.crt\n", f"{TLS}.key_file", "required"),
    case("only-min-version", f"{TLS}:\n  min_version: TLS13\n", f"{TLS}.cert_file", "required"),
    case("verify-no-ca", TLS_BASE + VERIFY, f"{TLS}.client_ca_file", "required"),
    *(
        case(
            f"{mode}-no-ca",
            f"{TLS_BASE}  client_auth_type: {mode}\n",
            f"{TLS}.client_ca_file",
            "required",
        )
        for mode in ("VerifyClientCertIfGiven", "RequireAnyClientCert")
    ),
    case(
        "ca-without-auth",
        TLS_BASE + "  client_ca_file: ca.crt\n",
        f"{TLS}.client_ca_file",
        "NoClientCert",
    ),
    case(
        "ca-not-pem",
        TLS_BASE + VERIFY + "  client_ca_file: server.key\n",
        f"{TLS}.client_ca_file",
        "no PEM certificate",
    ),
    case(
        "ca-broken-pem",
        TLS_BASE + VERIFY + "  client_ca_file: broken.crt\n",
        f"{TLS}.client_ca_file",
        "no usable PEM CA certificate",
    ),
    case(
        "bad-client-auth",
        TLS_BASE + "  client_auth_type: Always\n",
        f"{TLS}.client_auth_type",
        "unknown value",
    ),
    case("tls10", TLS_BASE + "  min_version: TLS10\n", f"{TLS}.min_version", "obsolete"),
    case("tls14", TLS_BASE + "  max_version: TLS14\n", f"{TLS}.max_version", "unknown TLS"),
    case(
        "min-above-max",
        TLS_BASE + "  min_version: TLS13\n  max_version: TLS12\n",
        f"{TLS}.min_version",
        "newer than max_version",
    ),
    case(
        "ciphers-not-list",
        TLS_BASE + "  cipher_suites: TLS_AES_128_GCM_SHA256\n",
        f"{TLS}.cipher_suites",
        "list of strings",
    ),
    case(
        "bad-curve",
        TLS_BASE + "  curve_preferences: [P256]\n",
        f"{TLS}.curve_preferences",
        "unknown curve",
    ),
    case(
        "prefer-not-bool",
        TLS_BASE + "  prefer_server_cipher_suites: sometimes\n",
        f"{TLS}.prefer_server_cipher_suites",
        "true or false",
    ),
    case(
        "http2-not-bool",
        "http_server_config:\n  http2: sometimes\n",
        "http_server_config.http2",
        "true or false",
    ),
    case(
        "unknown-http",
        "http_server_config:\n  http3: true\n",
        "http_server_config.http3",
        "unknown setting",
    ),
    case(
        "custom-header",
        HEADERS + "    X-Custom: 1\n",
        "http_server_config.headers.X-Custom",
        "cannot be configured",
    ),
    case(
        "header-case",
        HEADERS + "    x-frame-options: deny\n",
        "http_server_config.headers.x-frame-options",
        "did you mean X-Frame-Options",
    ),
    case(
        "header-enum",
        HEADERS + "    X-Frame-Options: allow\n",
        "http_server_config.headers.X-Frame-Options",
        "one of deny, sameorigin",
    ),
    case(
        "header-crlf",
        HEADERS + '    Content-Security-Policy: "a\\r\\nSet-Cookie: x"\n',
        "http_server_config.headers.Content-Security-Policy",
        "line breaks",
    ),
    *(
        forbidden_header(name)
        for name in (
            "Authorization",
            "Content-Type",
            "Content-Encoding",
            "Server",
            "Content-Length",
            "Date",
            "Set-Cookie",
        )
    ),
]


@pytest.mark.parametrize(("text", "setting", "problem"), ERRORS)
def test_bad_files_are_refused_with_a_clear_message(
    tls_dir: Path, text: str, setting: str, problem: str
) -> None:
    write(
        tls_dir / "broken.crt",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    path = write(tls_dir / "web.yml", text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message.startswith(PREFIX + str(path) + ": "), message
    if setting:
        assert f": {setting}: " in message, message
    assert problem in message, message
    assert_no_secrets(message, tls_dir)


def assert_no_secrets(message: str, tls_dir: Path) -> None:
    for hashed in (ALICE_HASH, BOB_HASH):
        assert hashed not in message
        assert hashed[7:29] not in message  # the salt alone
    assert "hunter2-plain" not in message
    assert "PRIVATE KEY" not in message
    for name in ("server.key", "ca.key", "encrypted.key"):
        for line in (tls_dir / name).read_text().splitlines():
            if not line.startswith("-----"):
                assert line[:20] not in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    with pytest.raises(WebConfigError, match=r"^--web\.config\.file: .*absent\.yml: cannot read"):
        load_web_config(path)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(b"basic_auth_users:\n  \xff\xfe\xfd: x\n")
    with pytest.raises(WebConfigError, match="not valid UTF-8"):
        load_web_config(path)


# --- credentials -------------------------------------------------------------------------------


@pytest.fixture
def users_config(tmp_path: Path) -> WebConfig:
    path = write(
        tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n  bob: {BOB_HASH}\n"
    )
    promtool_check_web_config(path)
    return load_web_config(path)


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (basic("alice", ALICE_PASSWORD), True),
        (basic("bob", BOB_PASSWORD), True),
        ("basic " + basic("alice", ALICE_PASSWORD).split()[1], True),  # scheme is case-insensitive
        (basic("alice", BOB_PASSWORD), False),
        (basic("alice", ALICE_PASSWORD + "x"), False),
        (basic("alice", ""), False),
        (basic("mallory", ALICE_PASSWORD), False),
        (basic("Alice", ALICE_PASSWORD), False),
        (None, False),
        ("", False),
        ("Basic", False),
        ("Bearer " + base64.b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode(), False),
        ("Basic !!!not-base64!!!", False),
        ("Basic " + base64.b64encode(b"alice").decode(), False),  # no colon
        ("Basic " + base64.b64encode(b"\xff\xfe:" + ALICE_PASSWORD.encode()).decode(), False),
        ("Basic ünïcode", False),
        (basic("alice", b"\xff" * 100), False),  # longer than bcrypt's 72 bytes
    ],
)
def test_check_credentials(users_config: WebConfig, header: str | None, accepted: bool) -> None:
    assert users_config.check_credentials(header) is accepted


def test_no_users_accepts_anything(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path / "web.yml", "basic_auth_users: {}\n"))
    assert config.check_credentials(None)
    assert config.check_credentials("Basic garbage")


@pytest.fixture
def count_bcrypt(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the hash each bcrypt.checkpw call was made against."""
    calls: list[bytes] = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


def test_successful_verification_is_cached(
    users_config: WebConfig, count_bcrypt: list[bytes]
) -> None:
    header = basic("alice", ALICE_PASSWORD)
    assert users_config.check_credentials(header)
    assert len(count_bcrypt) == 1
    assert users_config.check_credentials(header)
    assert users_config.check_credentials(header)
    assert len(count_bcrypt) == 1
    # A cached success says nothing about another password for the same user.
    assert not users_config.check_credentials(basic("alice", BOB_PASSWORD))
    assert len(count_bcrypt) == 2
    assert users_config.check_credentials(header)
    assert len(count_bcrypt) == 2


def test_failures_are_not_cached(users_config: WebConfig, count_bcrypt: list[bytes]) -> None:
    """Every wrong guess pays bcrypt's cost: that is what slows down guessing."""
    for _ in range(3):
        assert not users_config.check_credentials(basic("alice", "wrong"))
    assert len(count_bcrypt) == 3


def test_unknown_user_costs_a_bcrypt_too(
    users_config: WebConfig, count_bcrypt: list[bytes]
) -> None:
    """Otherwise response times would tell which user names exist."""
    assert not users_config.check_credentials(basic("mallory", ALICE_PASSWORD))
    assert len(count_bcrypt) == 1
    assert count_bcrypt[0] not in (ALICE_HASH.encode(), BOB_HASH.encode())


def test_unknown_user_never_matches_the_stand_in_hash(
    users_config: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a password that matches the timing stand-in does not log in a user that is absent."""
    monkeypatch.setattr(webconfig, "_DUMMY_HASH", bcrypt.hashpw(b"guess", bcrypt.gensalt(4)))
    assert not users_config.check_credentials(basic("mallory", "guess"))


def test_cache_is_per_hash(tmp_path: Path, count_bcrypt: list[bytes]) -> None:
    """A new hash for the same user (password changed) must be verified again."""
    header = basic("alice", ALICE_PASSWORD)
    first = load_web_config(
        write(tmp_path / "a.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    )
    assert first.check_credentials(header)
    new_hash = bcrypt.hashpw(b"changed", bcrypt.gensalt(4)).decode()
    second = load_web_config(write(tmp_path / "b.yml", f"basic_auth_users:\n  alice: {new_hash}\n"))
    assert not second.check_credentials(header)
    assert len(count_bcrypt) == 2


# --- reloading ---------------------------------------------------------------------------------


def test_watcher_without_a_file_never_reloads() -> None:
    watcher = WebConfigWatcher(None)
    assert watcher.current.ssl_context is None
    assert not watcher.reload_if_changed()


def test_watcher_refuses_a_bad_initial_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match=r"basic_auth_users\.alice"):
        WebConfigWatcher(write(tmp_path / "web.yml", "basic_auth_users:\n  alice: nope\n"))


def test_reload_picks_up_a_new_user(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    watcher = WebConfigWatcher(path)
    assert not watcher.reload_if_changed()
    write(path, f"basic_auth_users:\n  bob: {BOB_HASH}\n")
    promtool_check_web_config(path)
    assert watcher.reload_if_changed()
    assert watcher.current.check_credentials(basic("bob", BOB_PASSWORD))
    assert not watcher.current.check_credentials(basic("alice", ALICE_PASSWORD))
    assert not watcher.reload_if_changed()


def test_same_size_rewrite_is_noticed(tmp_path: Path) -> None:
    """Content hashing catches a rewrite that keeps size and (coarse) mtime."""
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    watcher = WebConfigWatcher(path)
    stat = path.stat()
    write(path, f"basic_auth_users:\n  bobby: {ALICE_HASH}\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert watcher.reload_if_changed()
    assert list(watcher.current.users) == ["bobby"]


def test_broken_file_keeps_the_last_good_config_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    watcher = WebConfigWatcher(path)
    good = watcher.current
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")

    write(path, f"basic_auth_users:\n  alice: {ALICE_HASH}\n  bob: [\n")
    assert not watcher.reload_if_changed()
    assert not watcher.reload_if_changed()
    assert watcher.current is good
    assert watcher.current.check_credentials(basic("alice", ALICE_PASSWORD))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "invalid YAML" in errors[0].__dict__["err"]
    assert ALICE_HASH not in errors[0].__dict__["err"]

    path.unlink()  # a different broken state is reported again, once
    assert not watcher.reload_if_changed()
    assert not watcher.reload_if_changed()
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2

    write(path, f"basic_auth_users:\n  bob: {BOB_HASH}\n")
    assert watcher.reload_if_changed()
    assert watcher.current.check_credentials(basic("bob", BOB_PASSWORD))


def test_reload_notices_a_renewed_certificate_file(tls_dir: Path) -> None:
    path = write(tls_dir / "web.yml", TLS_BASE)
    watcher = WebConfigWatcher(path)
    context = watcher.current.ssl_context
    assert not watcher.reload_if_changed()
    shutil.copyfile(tls_dir / "server2.crt", tls_dir / "server.crt")
    shutil.copyfile(tls_dir / "server2.key", tls_dir / "server.key")
    assert watcher.reload_if_changed()
    assert watcher.current.ssl_context is context


def test_half_written_certificate_keeps_the_old_one(
    tls_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new cert whose new key is not there yet is refused; the live context is untouched."""
    path = write(tls_dir / "web.yml", TLS_BASE)
    watcher = WebConfigWatcher(path)
    good = watcher.current
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")
    shutil.copyfile(tls_dir / "server2.crt", tls_dir / "server.crt")
    assert not watcher.reload_if_changed()
    assert watcher.current is good
    assert "does not belong" in caplog.records[-1].__dict__["err"]
    shutil.copyfile(tls_dir / "server2.key", tls_dir / "server.key")
    assert watcher.reload_if_changed()


@pytest.mark.parametrize("direction", ["off", "on"])
def test_turning_tls_on_or_off_needs_a_restart(
    tls_dir: Path, caplog: pytest.LogCaptureFixture, direction: str
) -> None:
    users = f"basic_auth_users:\n  alice: {ALICE_HASH}\n"
    before, after = (TLS_BASE, users) if direction == "off" else (users, TLS_BASE + users)
    path = write(tls_dir / "web.yml", before)
    watcher = WebConfigWatcher(path)
    context = watcher.current.ssl_context
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")
    write(path, after)
    assert watcher.reload_if_changed()
    assert watcher.current.ssl_context is context
    assert any("needs a restart" in r.getMessage() for r in caplog.records)
    # Auth still reloaded.
    assert not watcher.current.check_credentials(None)
    assert watcher.current.check_credentials(basic("alice", ALICE_PASSWORD))


def test_client_auth_change_needs_a_restart(
    tls_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tls_dir / "web.yml", TLS_BASE)
    watcher = WebConfigWatcher(path)
    context = watcher.current.ssl_context
    assert context is not None
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")
    write(
        path,
        TLS_BASE + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    assert watcher.reload_if_changed()
    assert watcher.current.ssl_context is context
    assert context.verify_mode == ssl.CERT_NONE
    assert any("need a restart" in r.getMessage() for r in caplog.records)
