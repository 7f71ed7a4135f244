"""ferry_cli.stack.load_stack: the local stack file."""

from __future__ import annotations

from pathlib import Path

import pytest
from ferry_cli.common import CliError
from ferry_cli.stack import DEFAULT_STACK, NatsServerConfig, ServiceEntry, StackConfig, load_stack

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_real_stack_file_loads() -> None:
    stack = load_stack(REPO / DEFAULT_STACK)
    assert stack.state_dir == ".ferry"
    assert stack.ready_timeout == 30
    assert stack.nats == NatsServerConfig(listen="127.0.0.1", port=4222, monitor_port=8222)
    # Discovery first (the others read the inventory it publishes); each service its own port.
    assert stack.services[0] == ServiceEntry(
        name="discovery", command="ferry-discovery", config="discovery.toml", http_port=8081
    )
    by_name = {service.name: service for service in stack.services}
    assert by_name["smbserver"] == ServiceEntry(
        name="smbserver", command="ferry-smbserver", config="smbserver.toml", http_port=8083
    )
    assert len({service.http_port for service in stack.services}) == len(stack.services)
    # Each service's config is relative to the stack file, and exists.
    for service in stack.services:
        assert service.config is not None
        assert (REPO / DEFAULT_STACK).parent.joinpath(service.config).is_file()


def test_empty_stack_file_gives_defaults(tmp_path: Path) -> None:
    assert load_stack(write(tmp_path, "")) == StackConfig()
    assert StackConfig().nats.port == 4222
    assert StackConfig().services == []


def test_service_without_config(tmp_path: Path) -> None:
    stack = load_stack(write(tmp_path, '[[services]]\nname = "x"\ncommand = "x"\nhttp_port = 0\n'))
    assert stack.services == [ServiceEntry(name="x", command="x", http_port=0)]
    assert stack.services[0].config is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("ready_timeout = 0\n", "ready_timeout"),
        ('ready_timeout = "soon"\n', "ready_timeout"),
        ("state = 'x'\n", "state"),
        ("[nats]\nport = 0\n", "nats.port"),
        ("[nats]\nport = 70000\n", "nats.port"),
        ("[nats]\nmonitor_port = -1\n", "nats.monitor_port"),
        ("[nats]\nprot = 4222\n", "nats.prot"),
        ('nats = "nats://127.0.0.1:4222"\n', "nats"),
        ('[[services]]\nname = "d"\ncommand = "c"\nhttp_port = 99999\n', "services.0.http_port"),
        ('[[services]]\nname = "d"\ncommand = "c"\n', "services.0.http_port"),
        ('[[services]]\nname = "d"\nhttp_port = 1\n', "services.0.command"),
        (
            '[[services]]\nname = "a"\ncommand = "a"\nhttp_port = 1\n'
            '[[services]]\nname = "b"\ncommand = "b"\nhttp_port = 2\nport = 3\n',
            "services.1.port",
        ),
        ('services = "discovery"\n', "services"),
    ],
)
def test_bad_stack_files_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CliError) as info:
        load_stack(path)
    message = str(info.value)
    assert message.startswith(f"invalid stack file {path}:")
    assert f"\n  {key}: " in message
    assert info.value.exit_code == 2


def test_missing_stack_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(CliError, match="does not exist") as info:
        load_stack(path)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("text", ["[nats\n", "port = \n", "a = 1\na = 2\n"])
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    with pytest.raises(CliError, match="is not valid TOML") as info:
        load_stack(write(tmp_path, text))
    assert info.value.exit_code == 2


@pytest.mark.parametrize("kind", ["directory", "not utf-8"])
def test_unreadable_stack_file_is_a_cli_error(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "stack.toml"
        path.write_bytes(b'state_dir = "\xff"\n')
    with pytest.raises(CliError):
        load_stack(path)
