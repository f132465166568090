"""Settings validation and the ``check-config`` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import main
from exporter.setting_values import parse_listen_address
from exporter.settings import ConfigError, load_settings

KEY = "sk-config-test-9f8e7d6c5b4a"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the developer's environment nor a stray .env may leak into these tests."""
    for name in (
        "CO_API_KEY",
        "COHERE_API_KEY",
        "CO_API_URL",
        "TOGETHER_API_KEY",
        "TOGETHER_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.web_listen_address == ":10042"
    assert settings.cohere_api_url == "https://api.cohere.com"
    assert settings.cohere_models == ()
    assert settings.poll_interval == 60.0
    assert settings.cohere_api_key is None


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "FINETUNE_EXPORTER_POLL_INTERVAL=15\nCO_API_URL=http://from-dotenv:1\n"
    )
    monkeypatch.setenv("CO_API_KEY", f"  {KEY}\n")
    monkeypatch.setenv("FINETUNE_EXPORTER_COHERE_MODELS", "a-1, b-2,,a-1")
    settings = load_settings()
    assert settings.poll_interval == 15.0
    assert settings.cohere_api_url == "http://from-dotenv:1"
    assert settings.cohere_models == ("a-1", "b-2")
    assert settings.cohere_api_key is not None
    assert settings.cohere_api_key.get_secret_value() == KEY


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINETUNE_EXPORTER_POLL_INTERVAL", "15")
    monkeypatch.setenv("CO_API_URL", "http://env:1")
    settings = load_settings(poll_interval="30", cohere_api_url="http://flag:2/")
    assert settings.poll_interval == 30.0
    assert settings.cohere_api_url == "http://flag:2"


def test_key_file_wins_and_is_stripped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CO_API_KEY", "from-env")
    key_file = tmp_path / "key"
    key_file.write_text(f"{KEY}\n")
    settings = load_settings(cohere_api_key_file=str(key_file))
    assert settings.cohere_api_key is not None
    assert settings.cohere_api_key.get_secret_value() == KEY
    assert KEY not in repr(settings)
    assert KEY not in str(settings)


@pytest.mark.parametrize(
    ("overrides", "flag", "fragment"),
    [
        ({"cohere_api_key_file": "/nonexistent/key"}, "--cohere.api-key-file", "cannot read"),
        ({"cohere_api_url": "ftp://x"}, "--cohere.api-url", "http(s) URL"),
        ({"cohere_api_url": "http://x/?a=1"}, "--cohere.api-url", "query"),
        ({"poll_interval": "0"}, "--poll.interval", "greater than 0"),
        ({"poll_interval": "soon"}, "--poll.interval", "valid number"),
        ({"poll_concurrency": "0"}, "--poll.concurrency", "greater than or equal to 1"),
        ({"cohere_models": "ok,a/b"}, "--cohere.models", "'a/b'"),
        ({"cohere_models": ".."}, "--cohere.models", "'..'"),
        ({"cohere_models": "x?y"}, "--cohere.models", "'x?y'"),
        ({"web_listen_address": "10042"}, "--web.listen-address", "HOST:PORT"),
        ({"web_listen_address": ":99999"}, "--web.listen-address", "outside"),
        ({"web_listen_address": ":0"}, "--web.listen-address", "outside 1-65535"),
        ({"web_listen_address": ":\u0661\u0660\u0664\u0662"}, "--web.listen-address", "PORT"),
        ({"web_telemetry_path": "metrics"}, "--web.telemetry-path", "path like"),
        ({"log_level": "chatty"}, "--log.level", "'debug'"),
        ({"log_format": "xml"}, "--log.format", "'logfmt'"),
    ],
)
def test_each_bad_setting_is_named(overrides: dict[str, str], flag: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    (problem,) = caught.value.problems
    assert problem.startswith(flag)
    assert fragment in problem


def test_empty_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CO_API_KEY", "   ")
    with pytest.raises(ConfigError, match="CO_API_KEY is set but empty"):
        load_settings()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"--cohere.api-key-file.*is empty"):
        load_settings(cohere_api_key_file=str(empty))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(poll_interval="-1", cohere_models="a/b", log_format="xml")
    assert len(caught.value.problems) == 3


@pytest.mark.parametrize(
    ("address", "parsed"),
    [(":10042", (None, 10042)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9", ("::1", 9))],
)
def test_listen_address(address: str, parsed: tuple[str | None, int]) -> None:
    assert parse_listen_address(address) == parsed


def test_check_config_prints_masked_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CO_API_KEY", KEY)
    assert main(["check-config", "--cohere.models", "m-1,m-2", "--poll.interval", "30"]) == 0
    out, err = capsys.readouterr()
    assert KEY not in out + err
    assert "CO_API_KEY / COHERE_API_KEY = <set, hidden>" in out
    assert "--cohere.models / FINETUNE_EXPORTER_COHERE_MODELS = m-1,m-2" in out
    assert "--poll.interval / FINETUNE_EXPORTER_POLL_INTERVAL = 30.0" in out


def test_check_config_exits_2_naming_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--poll.interval", "0", "--cohere.api-url", "nope"]) == 2
    _, err = capsys.readouterr()
    assert "--poll.interval" in err
    assert "--cohere.api-url" in err


def test_check_config_wants_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 2
    assert "no API key" in capsys.readouterr().err


def test_serve_refuses_bad_settings_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cohere.models", "../etc", "--cohere.api-url", "http://127.0.0.1:9"]) == 2
    assert "--cohere.models" in capsys.readouterr().err


def test_malformed_web_config_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CO_API_KEY", KEY)
    web_config = tmp_path / "web.yml"
    web_config.write_text("basic_auth_users: [not, a, map]\n")
    assert main(["check-config", "--web.config.file", str(web_config)]) == 2
    assert main(["--web.config.file", str(web_config)]) == 2
    err = capsys.readouterr().err
    assert err.count("--web.config.file") == 2


@pytest.mark.parametrize("command", [[], ["check-config"], ["demo"], ["serve"]])
def test_every_command_refuses_a_bad_web_config_in_one_line(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CO_API_KEY", KEY)
    web_config = tmp_path / "web.yml"
    web_config.write_text("basic_auth_users: [not, a, map]\n")
    assert main([*command, "--web.config.file", str(web_config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --web.config.file")
    assert err.count("\n") == 1, err


@pytest.mark.parametrize(
    "url",
    ["https://user:hunter2-secret@api.cohere.com", "https://hunter2-secret@api.cohere.com"],
)
def test_credentials_in_the_api_url_are_refused_unechoed(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CO_API_KEY", KEY)
    with pytest.raises(ConfigError) as caught:
        load_settings(cohere_api_url=url)
    assert "hunter2-secret" not in str(caught.value)
    assert "user or password" in str(caught.value)
    assert main(["check-config", "--cohere.api-url", url]) == 2
    out, err = capsys.readouterr()
    assert "hunter2-secret" not in out + err
    assert err.count("\n") == 1


def test_a_bad_scheme_is_refused_without_echoing_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(cohere_api_url="ftp://user:hunter2-secret@host")
    assert "hunter2-secret" not in str(caught.value)


def test_a_huge_bad_value_is_not_echoed_back_whole() -> None:
    huge = "x" * 100_000
    for overrides in (
        {"web_listen_address": huge},
        {"web_telemetry_path": huge},
        {"cohere_models": ",".join(["a/b" + huge[:1000]] * 50)},
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings(**overrides)
        assert len(str(caught.value)) < 400, overrides.keys()


def test_together_reads_its_vendor_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", f" {KEY} ")
    monkeypatch.setenv("TOGETHER_BASE_URL", "http://together.internal:8080/")
    settings = load_settings(together_jobs="ft-1, ft-2,ft-1")
    assert settings.together_api_key is not None
    assert settings.together_api_key.get_secret_value() == KEY
    assert settings.together_api_url == "http://together.internal:8080"
    assert settings.together_jobs == ("ft-1", "ft-2")
    assert settings.polled_providers() == ("together",)
    key_file = tmp_path / "together-key"
    key_file.write_text("from-file\n")
    from_file = load_settings(together_api_key_file=str(key_file))
    assert from_file.together_api_key is not None
    assert from_file.together_api_key.get_secret_value() == "from-file"


def test_every_provider_with_a_key_is_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CO_API_KEY", KEY)
    assert load_settings().polled_providers() == ("cohere",)
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    assert load_settings().polled_providers() == ("cohere", "together")
    assert load_settings(providers="together").polled_providers() == ("together",)


def test_no_key_at_all_names_the_key_settings_of_both(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "CO_API_KEY" in err
    assert "TOGETHER_API_KEY" in err
    assert err.count("\n") == 1


def test_a_named_provider_needs_its_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CO_API_KEY", KEY)
    assert main(["check-config", "--providers", "cohere,together"]) == 2
    err = capsys.readouterr().err
    assert "TOGETHER_API_KEY" in err
    assert "CO_API_KEY" not in err
    with pytest.raises(ConfigError, match="unknown provider 'openai'"):
        load_settings(providers="cohere,openai")
