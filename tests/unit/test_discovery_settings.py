"""ferry_discovery.settings: the discovery section, its TTL rule, and per-interface overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ferry_discovery.settings import DiscoveryOptions, DiscoverySettings
from ferry_hostnet.model import InterfaceOverride, RdmaKind
from ferry_runtime.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FERRY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def load(tmp_path: Path, text: str) -> DiscoverySettings:
    path = tmp_path / "discovery.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(DiscoverySettings, path)


def test_defaults() -> None:
    s = load_settings(DiscoverySettings)
    assert s.discovery == DiscoveryOptions()
    assert s.discovery.refresh_interval == 10.0
    assert s.discovery.inventory_ttl == 60.0
    assert s.discovery.debounce == 0.2
    assert s.discovery.include_loopback is False
    assert s.interfaces == {}
    assert DiscoverySettings.service_name == "discovery"


def test_example_file_of_the_local_stack_loads() -> None:
    s = load_settings(DiscoverySettings, REPO / "deploy/local/discovery.toml")
    assert s.discovery.refresh_interval == 10
    assert s.discovery.inventory_ttl == 60
    assert s.http.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("refresh", "ttl"),
    [(10, 19.9), (10, 10), (30, 59), (0.5, 0.9)],
)
def test_ttl_shorter_than_two_refreshes_refused(tmp_path: Path, refresh: float, ttl: float) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[discovery]\nrefresh_interval = {refresh}\ninventory_ttl = {ttl}\n")
    message = str(info.value)
    assert "discovery" in message
    assert "inventory_ttl" in message
    assert "refresh_interval" in message
    assert f"({float(ttl)}s)" in message
    assert f"({float(refresh)}s)" in message


@pytest.mark.parametrize(("refresh", "ttl"), [(10, 20), (10, 60), (0.5, 1)])
def test_ttl_of_at_least_two_refreshes_accepted(tmp_path: Path, refresh: float, ttl: float) -> None:
    s = load(tmp_path, f"[discovery]\nrefresh_interval = {refresh}\ninventory_ttl = {ttl}\n")
    assert (s.discovery.refresh_interval, s.discovery.inventory_ttl) == (refresh, ttl)


def test_ttl_rule_applies_to_environment_overrides(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("FERRY_DISCOVERY__REFRESH_INTERVAL", "40")
    with pytest.raises(ConfigError, match="inventory_ttl"):
        load(tmp_path, "[discovery]\ninventory_ttl = 60\n")


def test_environment_overrides_discovery_options(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FERRY_DISCOVERY__REFRESH_INTERVAL", "5")
    clean_env.setenv("FERRY_DISCOVERY__INCLUDE_LOOPBACK", "true")
    s = load_settings(DiscoverySettings)
    assert s.discovery.refresh_interval == 5.0
    assert s.discovery.include_loopback is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[discovery]\nrefresh_interval = 0\n", "discovery.refresh_interval"),
        ("[discovery]\ndebounce = -1\n", "discovery.debounce"),
        ("[discovery]\nrefresh = 5\n", "discovery.refresh: unknown key"),
        ('[interfaces.eth0]\nspeed = "fast"\n', "interfaces.eth0.speed"),
        ('[interfaces.eth0]\nspeed = "0"\n', "interfaces.eth0.speed"),
        ("[interfaces.eth0]\nspeed = 1.5\n", "interfaces.eth0.speed"),
        ('[interfaces.eth0]\nrdma = "fibre"\n', "interfaces.eth0.rdma"),
        ('[interfaces.eth0]\nrss = "maybe"\n', "interfaces.eth0.rss"),
        ("[interfaces.eth0]\nmtu = 9000\n", "interfaces.eth0.mtu: unknown key"),
    ],
)
def test_bad_discovery_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert f"  {expected}" in str(info.value)


def test_interface_overrides(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """
[interfaces.eth0]
speed = "25G"
rss = true
rdma = "roce"
pfc = true

[interfaces.eth1]
speed = 10000000000
rdma = "none"

[interfaces."eth2.100"]
rss = false
""",
    )
    assert s.interfaces["eth0"] == InterfaceOverride(
        speed=25_000_000_000, rss=True, rdma=RdmaKind.ROCE, pfc=True
    )
    assert s.interfaces["eth0"].speed == 25_000_000_000
    assert s.interfaces["eth1"].speed == 10_000_000_000
    assert s.interfaces["eth1"].rdma == "none"
    assert s.interfaces["eth2.100"] == InterfaceOverride(rss=False)


def test_interface_override_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FERRY_INTERFACES__eth0__SPEED", "100M")
    clean_env.setenv("FERRY_INTERFACES__enP4p1s0f0__RSS", "true")
    s = load_settings(DiscoverySettings)
    assert s.interfaces["eth0"].speed == 100_000_000
    assert s.interfaces["enP4p1s0f0"].rss is True
