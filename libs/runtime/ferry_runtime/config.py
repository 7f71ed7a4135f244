"""Service configuration: a TOML file, overridden by ``FERRY_*`` environment variables.

Every service describes its settings as a subclass of :class:`ServiceSettings`
(pydantic models, so each value is validated when the service starts).  The
file is read first; environment variables then override single keys, with
``__`` between nesting levels: ``FERRY_NATS__URL=nats://hv02:4222`` sets
``[nats] url``.  A bad value stops the service with :class:`ConfigError`,
whose message names the key, what was expected and what was given.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "FERRY_"
CONFIG_ENV = "FERRY_CONFIG"

#: Host names travel as NATS subject tokens and KV keys: letters, digits, ``-`` and ``_``,
#: dots between labels (no wildcards, no spaces).
HOST_NAME_RE = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*$"
)


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class Section(BaseModel):
    """A config section: unknown keys are errors, so that typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_host_name(value: str) -> str:
    if len(value) > 253 or not HOST_NAME_RE.fullmatch(value):
        raise ValueError(
            "a host name of letters, digits, '-' and '_' in dot-separated labels, at most 253 characters"
        )
    return value


class HostSettings(Section):
    """Who this host is: its name in the cluster and its failure-domain labels."""

    name: str = Field(default_factory=socket.gethostname, description="the host's name in the cluster")
    site: str | None = None
    row: str | None = None
    rack: str | None = None

    _check_name = field_validator("name")(validate_host_name)


class NatsSettings(Section):
    """The connection to the NATS cluster (JetStream enabled)."""

    url: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    connect_timeout: float = Field(2.0, gt=0, description="seconds for one connection attempt")
    reconnect_wait: float = Field(1.0, gt=0, description="seconds between reconnection attempts")
    request_timeout: float = Field(2.0, gt=0, description="default timeout of a request, in seconds")
    drain_timeout: float = Field(5.0, gt=0, description="seconds allowed to drain on shutdown")

    @field_validator("url", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("url")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.fullmatch(r"(nats|tls|ws|wss)://[^/\s]+", url):
                raise ValueError(f"a NATS URL like nats://host:4222, got {url!r}")
        return value


class HttpSettings(Section):
    """Where the service's HTTP API listens."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")


class TracingSettings(Section):
    """OpenTelemetry: where spans go (nowhere by default)."""

    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = Field(None, description="e.g. http://collector:4318/v1/traces")
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ServiceSettings(Section):
    """Settings every Ferry service shares; services subclass it with their own sections."""

    #: The service's name: tracing resource, NATS connection name, metrics prefix.
    service_name: ClassVar[str] = "ferry"

    host: HostSettings = Field(default_factory=HostSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    shutdown_timeout: float = Field(10.0, gt=0, description="seconds allowed for a graceful stop")


S = TypeVar("S", bound=ServiceSettings)


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        given = item.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}{shown}")
    return "\n".join(lines)


def load_settings(cls: type[S], path: str | os.PathLike[str] | None = None) -> S:
    """Read ``path`` (or ``$FERRY_CONFIG``; none means defaults), apply the environment, validate.

    Raises :class:`ConfigError` with one line per bad key.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    origin = "defaults and environment"
    if path is not None:
        file = Path(path)
        origin = f"{file} and environment"
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {file} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"configuration file {file} is not UTF-8: {exc}") from None
    _overlay_environment(cls, data, os.environ)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


def _overlay_environment(cls: type[ServiceSettings], data: dict[str, Any], env: Mapping[str, str]) -> None:
    """Set ``FERRY_SECTION__KEY=value`` over the file's values (names are case-insensitive).

    Only variables whose first part names a top-level setting are taken, so that other
    ``FERRY_*`` variables (``FERRY_CONFIG``, the CLI's) are not mistaken for settings.
    The first and last parts (section and key) are case-insensitive; parts between them
    are dictionary keys and keep their case (``FERRY_INTERFACES__enP4p1s0f0__SPEED=25G``).
    Values stay strings; the model converts them (numbers, booleans, comma-separated lists).
    """
    top = set(cls.model_fields)
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].split("__")
        if not all(path):
            continue
        path[0], path[-1] = path[0].lower(), path[-1].lower()
        if path[0] not in top:
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
