"""The selector's app without NATS (nothing listens on its URL): the API document, request
validation, and 503 until the state is loaded; and the shipped deployment files."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from ferry_cli.stack import DEFAULT_STACK, load_stack
from ferry_runtime.config import load_settings
from ferry_selector.app import create_app
from ferry_selector.settings import SelectorSettings
from smbcore.selection import PfcPolicy

from tests.support.procs import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client() -> AsyncIterator[TestClient[object, object]]:
    settings = SelectorSettings.model_validate(
        {"nats": {"url": f"nats://127.0.0.1:{free_port()}", "connect_timeout": 0.2, "reconnect_wait": 0.2}}
    )
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client


async def test_api_document_lists_the_routes(client: TestClient[object, object]) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["info"]["title"] == "Ferry selector"
    plan = document["paths"]["/v1/plan"]["get"]
    assert [p["name"] for p in plan["parameters"]] == ["client", "server", "purpose"]
    assert plan["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Plan")
    schema = document["components"]["schemas"]["Plan"]
    assert "class" in schema["properties"] and "nic_class" not in schema["properties"]
    assert set(document["paths"]["/v1/constraints"]) == {"get", "post"}
    assert set(document["paths"]["/v1/constraints/{client}/{server}"]) == {"delete"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v1/plan", None, 400, "missing query parameter client and server"),
        ("GET", "/v1/plan?client=a", None, 400, "missing query parameter server"),
        ("GET", "/v1/plan?client=a&server=b&purpose=x", None, 400, "purpose"),
        ("GET", "/v1/plan?client=a%20b&server=b", None, 400, "client"),
        ("POST", "/v1/constraints", "not json", 400, "not JSON"),
        ("POST", "/v1/constraints", {"client": "a", "server": "b"}, 400, "interfaces: Field required"),
        (
            "PUT",
            "/v1/hosts/a/migration-networks",
            {"networks": [{"subnet": "10/8"}], "host": "b"},
            400,
            "path",
        ),
        ("PUT", "/v1/hosts/a/migration-networks", [1], 400, "must be an object"),
        ("PUT", "/v1/hosts/a/migration-networks", {"networks": [{"subnet": "nope"}]}, 400, "subnet"),
        ("GET", "/v1/plan?client=a&server=b", None, 503, "state not loaded from NATS yet"),
        ("GET", "/v1/hosts", None, 503, "not loaded"),
        ("GET", "/v1/constraints", None, 503, "not loaded"),
        ("POST", "/v1/constraints", {"client": "a", "server": "b", "interfaces": [1]}, 503, "not loaded"),
        ("DELETE", "/v1/constraints/a/b", None, 503, "not loaded"),
        ("GET", "/v1/hosts/a/migration-networks", None, 503, "not loaded"),
        ("DELETE", "/v1/hosts/a/migration-networks", None, 503, "not loaded"),
    ],
)
async def test_requests_are_checked(
    client: TestClient[object, object], method: str, path: str, body: object, status: int, message: str
) -> None:
    if isinstance(body, str):
        response = await client.request(method, path, data=body)
    else:
        response = await client.request(method, path, json=body)
    answer = await response.json()
    assert response.status == status, answer
    assert answer["status"] == status and message in answer["message"]


async def test_not_ready_without_nats(client: TestClient[object, object]) -> None:
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert body["checks"]["nats"]["ok"] is False and body["checks"]["state"]["ok"] is False
    metrics = await (await client.get("/metrics")).text()
    assert "ferry_selector_roce_without_pfc_interfaces 0.0" in metrics
    assert "ferry_selector_inventories 0.0" in metrics


# -- deployment files ---------------------------------------------------------------------------------

CONFIGS = ["deploy/local/selector.toml", "deploy/systemd/selector.toml.example", "k8s/base/selector.toml"]


@pytest.mark.parametrize("path", CONFIGS)
def test_selector_configs_load(path: str) -> None:
    settings = load_settings(SelectorSettings, REPO / path)
    policy = settings.selector.policy()
    assert policy.roce_without_pfc is PfcPolicy.EXCLUDE and policy.max_channels == 32


def test_defaults_and_bad_values() -> None:
    options = SelectorSettings().selector
    assert options.unset_migration_networks == "any" and options.cas_attempts >= 1
    with pytest.raises(ValueError, match="roce_without_pfc"):
        SelectorSettings.model_validate({"selector": {"roce_without_pfc": "allow"}})
    with pytest.raises(ValueError, match="rss_connections"):
        SelectorSettings.model_validate({"selector": {"rss_connections": 0}})


def test_the_local_stack_starts_the_selector_after_discovery() -> None:
    services = [s.name for s in load_stack(REPO / DEFAULT_STACK).services]
    assert "selector" in services and services.index("selector") > services.index("discovery")


def test_systemd_unit_runs_the_console_script() -> None:
    unit = (REPO / "deploy/systemd/ferry-selector.service").read_text()
    assert "ExecStart=/opt/ferry/.venv/bin/ferry-selector --config /etc/ferry/selector.toml" in unit
    assert "RestartPreventExitStatus=78" in unit


def test_kubernetes_deployment_wiring() -> None:
    kustomization = (REPO / "k8s/base/kustomization.yaml").read_text()
    assert re.search(r"^  - selector\.yaml$", kustomization, re.MULTILINE)
    assert "name: ferry-selector-config\n    files:\n      - selector.toml" in kustomization
    manifest = (REPO / "k8s/base/selector.yaml").read_text()
    assert "kind: Deployment" in manifest and "name: ferry-selector-config" in manifest
    assert 'command: ["ferry-selector", "--config", "/etc/ferry/selector.toml"]' in manifest
    port = tomllib.loads((REPO / "deploy/systemd/selector.toml.example").read_text())["http"]["port"]
    assert f"containerPort: {port}" in manifest and f'prometheus.io/port: "{port}"' in manifest
