"""The shipped configuration files stay valid as the settings evolve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ferry_discovery.settings import DiscoverySettings
from ferry_runtime.config import load_settings

REPO = Path(__file__).resolve().parents[2]


CONFIGS = ["deploy/local/discovery.toml", "deploy/systemd/discovery.toml.example", "k8s/base/discovery.toml"]


@pytest.mark.parametrize("path", CONFIGS)
def test_discovery_configs_load(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_HOST__NAME", "hv01")
    settings = load_settings(DiscoverySettings, REPO / path)
    assert settings.discovery.inventory_ttl >= 2 * settings.discovery.refresh_interval


def test_dashboard_is_json_with_panels() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/ferry-discovery.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert any("ferry_discovery_publishes_total" in e for e in exprs)


def test_systemd_unit_runs_the_console_script() -> None:
    unit = (REPO / "deploy/systemd/ferry-discovery.service").read_text()
    assert "ferry-discovery --config /etc/ferry/discovery.toml" in unit
