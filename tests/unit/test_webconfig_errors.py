"""``--web.config.file``: every bad file is refused with the setting to fix, and no secret.

Each case names the dotted setting and the problem its message must contain; every message is
also checked for hashes, salts and key lines, which must never be repeated back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.mark import ParameterSet

from exporter.webconfig import WebConfigError, load_web_config
from tests.webconfig_support import (
    ALICE_HASH,
    BOB_HASH,
    PREFIX,
    TLS_BASE,
    copy_pki,
    make_pki,
    write,
)


@pytest.fixture(scope="module")
def pki_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_pki(directory)
    return directory


@pytest.fixture
def tls_dir(tmp_path: Path, pki_source: Path) -> Path:
    copy_pki(pki_source, tmp_path)
    return tmp_path


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
        "hash-as-client-auth",  # a misplaced secret is described, never repeated
        TLS_BASE + f"  client_auth_type: {ALICE_HASH}\n",
        f"{TLS}.client_auth_type",
        "unknown value of 60 characters",
    ),
    case(
        "prefer-null",
        TLS_BASE + "  prefer_server_cipher_suites:\n",
        f"{TLS}.prefer_server_cipher_suites",
        "must be true or false, not null",
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
