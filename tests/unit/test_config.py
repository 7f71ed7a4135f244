"""ferry_runtime.config: the TOML file, FERRY_* overrides, and ConfigError messages that name the key."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from ferry_runtime.config import (
    ConfigError,
    HostSettings,
    ServiceSettings,
    load_settings,
    validate_host_name,
)
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No FERRY_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("FERRY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def write(tmp_path: Path, text: str, name: str = "service.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


FULL_FILE = """
shutdown_timeout = 3.5

[host]
name = "hv01.dc1"
site = "dc1"
row = "r2"
rack = "k12"

[nats]
url = ["nats://hv01:4222", "tls://hv02:4222"]
connect_timeout = 0.5
reconnect_wait = 0.25
request_timeout = 1.5
drain_timeout = 4

[http]
host = "0.0.0.0"
port = 8081

[tracing]
exporter = "otlp"
otlp_endpoint = "http://collector:4318/v1/traces"
sample_ratio = 0.25

[logging]
level = "debug"
format = "json"
"""


# -- defaults and file ------------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    s = load_settings(ServiceSettings)
    assert s.host.name == socket.gethostname()
    assert (s.host.site, s.host.row, s.host.rack) == (None, None, None)
    assert s.nats.url == ["nats://127.0.0.1:4222"]
    assert s.nats.connect_timeout == 2.0
    assert s.nats.reconnect_wait == 1.0
    assert s.nats.request_timeout == 2.0
    assert s.nats.drain_timeout == 5.0
    assert (s.http.host, s.http.port) == ("127.0.0.1", 0)
    assert (s.tracing.exporter, s.tracing.otlp_endpoint, s.tracing.sample_ratio) == ("none", None, 1.0)
    assert (s.logging.level, s.logging.format) == ("INFO", "text")
    assert s.shutdown_timeout == 10.0


def test_file_values(tmp_path: Path) -> None:
    s = load_settings(ServiceSettings, write(tmp_path, FULL_FILE))
    assert s.host == HostSettings(name="hv01.dc1", site="dc1", row="r2", rack="k12")
    assert s.nats.url == ["nats://hv01:4222", "tls://hv02:4222"]
    assert (s.nats.connect_timeout, s.nats.reconnect_wait) == (0.5, 0.25)
    assert (s.nats.request_timeout, s.nats.drain_timeout) == (1.5, 4.0)
    assert (s.http.host, s.http.port) == ("0.0.0.0", 8081)
    assert s.tracing.exporter == "otlp"
    assert s.tracing.otlp_endpoint == "http://collector:4318/v1/traces"
    assert s.tracing.sample_ratio == 0.25
    assert (s.logging.level, s.logging.format) == ("DEBUG", "json")
    assert s.shutdown_timeout == 3.5


def test_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 9000\n")
    assert load_settings(ServiceSettings, str(path)).http.port == 9000


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    s = load_settings(ServiceSettings, write(tmp_path, "[http]\nport = 9000\n"))
    assert s.http.port == 9000
    assert s.http.host == "127.0.0.1"
    assert s.nats.url == ["nats://127.0.0.1:4222"]


def test_nats_url_string_in_file_is_split(tmp_path: Path) -> None:
    s = load_settings(ServiceSettings, write(tmp_path, '[nats]\nurl = "nats://a:4222, nats://b:4222"\n'))
    assert s.nats.url == ["nats://a:4222", "nats://b:4222"]


def test_settings_are_frozen() -> None:
    s = load_settings(ServiceSettings)
    with pytest.raises(ValidationError):
        s.http.port = 1  # type: ignore[misc]


# -- environment ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "read", "expected"),
    [
        ({"FERRY_NATS__URL": "nats://hv09:4222"}, lambda s: s.nats.url, ["nats://hv09:4222"]),
        (
            {"FERRY_NATS__URL": "nats://a:4222,tls://b:4222 , ws://c:80,"},
            lambda s: s.nats.url,
            ["nats://a:4222", "tls://b:4222", "ws://c:80"],
        ),
        ({"FERRY_HTTP__PORT": "8082"}, lambda s: s.http.port, 8082),
        ({"FERRY_HTTP__HOST": "::1"}, lambda s: s.http.host, "::1"),
        ({"FERRY_HOST__NAME": "hv42"}, lambda s: s.host.name, "hv42"),
        ({"FERRY_HOST__RACK": "k1"}, lambda s: s.host.rack, "k1"),
        ({"FERRY_LOGGING__LEVEL": "warning"}, lambda s: s.logging.level, "WARNING"),
        ({"FERRY_LOGGING__LEVEL": "Error"}, lambda s: s.logging.level, "ERROR"),
        ({"FERRY_TRACING__SAMPLE_RATIO": "0.5"}, lambda s: s.tracing.sample_ratio, 0.5),
        ({"FERRY_NATS__CONNECT_TIMEOUT": "0.1"}, lambda s: s.nats.connect_timeout, 0.1),
        ({"FERRY_SHUTDOWN_TIMEOUT": "2"}, lambda s: s.shutdown_timeout, 2.0),
        # Names are case-insensitive after the prefix.
        ({"FERRY_Http__Port": "8083"}, lambda s: s.http.port, 8083),
    ],
)
def test_environment_sets_values(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], read: object, expected: object
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    s = load_settings(ServiceSettings)
    assert read(s) == expected  # type: ignore[operator]


def test_environment_wins_over_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, FULL_FILE)
    clean_env.setenv("FERRY_NATS__URL", "nats://env1:4222,nats://env2:4222")
    clean_env.setenv("FERRY_HTTP__PORT", "9999")
    clean_env.setenv("FERRY_LOGGING__LEVEL", "error")
    clean_env.setenv("FERRY_HOST__NAME", "from-env")
    s = load_settings(ServiceSettings, path)
    assert s.nats.url == ["nats://env1:4222", "nats://env2:4222"]
    assert s.http.port == 9999
    assert s.logging.level == "ERROR"
    assert s.host.name == "from-env"
    # Keys the environment does not touch keep the file's values.
    assert s.http.host == "0.0.0.0"
    assert s.nats.connect_timeout == 0.5
    assert s.host.site == "dc1"
    assert s.logging.format == "json"


@pytest.mark.parametrize(
    "name",
    [
        "FERRY_SMB_PASSWORD",
        "FERRY_CONFIG_DIR",
        "FERRY_HTTP_PORT",  # one underscore: not a nesting level, not a top-level setting
        "FERRY_NATS__",  # empty last part
        "FERRY___URL",  # empty first part
        "FERRY_",
        "FERRY_UNKNOWN__KEY",
    ],
)
def test_unrelated_ferry_variables_are_ignored(clean_env: pytest.MonkeyPatch, name: str) -> None:
    baseline = load_settings(ServiceSettings)
    clean_env.setenv(name, "not a setting")
    assert load_settings(ServiceSettings) == baseline


def test_ferry_config_and_smb_password_do_not_break_loading(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, "[http]\nport = 7000\n")
    clean_env.setenv("FERRY_CONFIG", str(path))
    clean_env.setenv("FERRY_SMB_PASSWORD", "hunter2")
    s = load_settings(ServiceSettings)
    assert s.http.port == 7000
    assert "hunter2" not in repr(s)


def test_ferry_config_used_when_no_path(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("FERRY_CONFIG", str(write(tmp_path, '[host]\nname = "from-config-env"\n')))
    assert load_settings(ServiceSettings).host.name == "from-config-env"


def test_explicit_path_wins_over_ferry_config(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("FERRY_CONFIG", str(write(tmp_path, "[http]\nport = 1\n", "env.toml")))
    explicit = write(tmp_path, "[http]\nport = 2\n", "explicit.toml")
    assert load_settings(ServiceSettings, explicit).http.port == 2


def test_empty_ferry_config_means_defaults(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FERRY_CONFIG", "")
    assert load_settings(ServiceSettings).http.port == 0


def test_ferry_config_naming_a_missing_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    clean_env.setenv("FERRY_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(ServiceSettings)
    assert str(missing) in str(info.value)


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[http]\nport = 70000\n", {}, "http.port"),
        ("[http]\nport = -1\n", {}, "http.port"),
        ('[http]\nport = "eighty"\n', {}, "http.port"),
        ("", {"FERRY_HTTP__PORT": "eighty"}, "http.port: "),
        ("[http]\nportt = 8080\n", {}, "http.portt: unknown key"),
        ("bogus = 1\n", {}, "bogus: unknown key"),
        ("[nats]\nuser = 'x'\n", {}, "nats.user: unknown key"),
        ('[nats]\nurl = "http://hv01:4222"\n', {}, "nats.url"),
        ('[nats]\nurl = ["nats://ok:4222", "hv02:4222"]\n', {}, "nats.url"),
        ("[nats]\nurl = []\n", {}, "nats.url"),
        ("", {"FERRY_NATS__URL": "nats://a:4222,not a url"}, "nats.url"),
        ("", {"FERRY_NATS__URL": " , "}, "nats.url"),
        ("[nats]\nconnect_timeout = 0\n", {}, "nats.connect_timeout"),
        ("[nats]\nrequest_timeout = -2\n", {}, "nats.request_timeout"),
        ('[logging]\nlevel = "verbose"\n', {}, "logging.level"),
        ('[logging]\nformat = "xml"\n', {}, "logging.format"),
        ('[tracing]\nexporter = "jaeger"\n', {}, "tracing.exporter"),
        ("[tracing]\nsample_ratio = 1.5\n", {}, "tracing.sample_ratio"),
        ("shutdown_timeout = 0\n", {}, "shutdown_timeout"),
        ('http = "8080"\n', {}, "http"),
        ('[host]\nname = "bad host"\n', {}, "host.name"),
        ("", {"FERRY_HOST__NAME": "hv*"}, "host.name"),
    ],
)
def test_bad_values_name_the_key(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(ServiceSettings, write(tmp_path, text))
    message = str(info.value)
    assert message.startswith("invalid configuration (")
    assert f"  {expected}" in message


def test_error_shows_the_given_value(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FERRY_HTTP__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"http\.port: .*\(got 'eighty'\)"):
        load_settings(ServiceSettings)


def test_error_lists_every_bad_key(tmp_path: Path) -> None:
    text = '[http]\nport = 70000\nportt = 1\n[logging]\nlevel = "loud"\n'
    with pytest.raises(ConfigError) as info:
        load_settings(ServiceSettings, write(tmp_path, text))
    lines = str(info.value).splitlines()
    assert str(tmp_path / "service.toml") in lines[0]
    keys = sorted(line.split(":")[0].strip() for line in lines[1:])
    assert keys == ["http.port", "http.portt", "logging.level"]


def test_error_origin_without_file(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FERRY_HTTP__PORT", "x")
    with pytest.raises(ConfigError, match=r"^invalid configuration \(defaults and environment\):"):
        load_settings(ServiceSettings)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(ServiceSettings, missing)
    assert str(missing) in str(info.value)


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_settings(ServiceSettings, tmp_path)  # a directory


@pytest.mark.parametrize(
    "text",
    ["[http\nport = 1\n", "port = \n", "[http]\nport = 1\nport = 2\n", "= 3\n", "[nats]\nurl = [1,\n"],
)
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load_settings(ServiceSettings, path)
    assert str(path) in str(info.value)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[host]\nsite = "M\xfcnchen"\n')
    with pytest.raises(ConfigError):
        load_settings(ServiceSettings, path)


# -- host names -------------------------------------------------------------------------------

GOOD_HOST_NAMES = [
    "hv01",
    "a",
    "HV-01",
    "hv_01",
    "hv01.dc1.example.com",
    "1",
    "x" * 63,
    ".".join(["a" * 63] * 3) + ".b" * 30,  # 251 characters
]
BAD_HOST_NAMES = [
    "",
    "bad host",
    " hv01",
    "hv01 ",
    "*",
    "hv*",
    ">",
    "hv.>",
    "hv01.*",
    "a..b",
    ".hv01",
    "hv01.",
    "-hv01",
    "hv01-",
    "_hv01",
    "hv01_",
    "hv01/x",
    "hv01\thv02",
    "hv01\t",
    "hv01\nhv02",
    "hvö1",
    "x" * 254,
]


@pytest.mark.parametrize("name", GOOD_HOST_NAMES)
def test_good_host_names(name: str) -> None:
    assert len(name) <= 253
    assert validate_host_name(name) == name
    assert HostSettings(name=name).name == name


@pytest.mark.parametrize("name", BAD_HOST_NAMES)
def test_bad_host_names_refused(name: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        validate_host_name(name)
    with pytest.raises(ValidationError):
        HostSettings(name=name)


def test_host_name_with_trailing_newline_refused() -> None:
    with pytest.raises(ValueError, match="host name"):
        validate_host_name("hv01\n")


@pytest.mark.parametrize("name", ["bad host", "*", ">", "a..b", "hv01."])
def test_bad_host_name_from_environment(clean_env: pytest.MonkeyPatch, name: str) -> None:
    clean_env.setenv("FERRY_HOST__NAME", name)
    with pytest.raises(ConfigError, match=r"host\.name: .*host name"):
        load_settings(ServiceSettings)
