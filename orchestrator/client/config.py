"""orchctl configuration files, shaped like kubeconfig.

```yaml
apiVersion: v1
kind: Config
current-context: admin@local
clusters: [{name: local, cluster: {server: 127.0.0.1:6443, certificate-authority-data: <b64>}}]
users: [{name: admin, user: {client-certificate-data: <b64>, client-key-data: <b64>}}]
contexts: [{name: admin@local, context: {cluster: local, user: admin, namespace: default}}]
```
Lookup order: `--config FILE`, then `$ORCHCONFIG`, then `~/.orch/config`.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ENV_VAR = "ORCHCONFIG"


class ConfigError(Exception):
    pass


def default_path() -> Path:
    return Path.home() / ".orch" / "config"


def resolve_path(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return default_path()


@dataclass(frozen=True)
class Connection:
    """Everything needed to talk to one apiserver as one user."""

    server: str
    ca_pem: bytes
    cert_pem: bytes = b""
    key_pem: bytes = b""
    token: str = ""
    namespace: str = "default"
    context: str = ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _named(items: list[dict[str, Any]], name: str, what: str, path: Path) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            body = item.get(what)
            return body if isinstance(body, dict) else {}
    raise ConfigError(f'{path}: no {what} named "{name}"')


def _data(section: dict[str, Any], key: str, path: Path) -> bytes:
    if section.get(f"{key}-data"):
        return base64.b64decode(section[f"{key}-data"])
    if section.get(key):
        file = Path(section[key])
        if not file.is_absolute():
            file = path.parent / file
        return file.read_bytes()
    return b""


class ConfigFile:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        for key in ("clusters", "users", "contexts"):
            if not isinstance(self.data.get(key), list):
                self.data[key] = []

    @classmethod
    def load(cls, path: Path, *, missing_ok: bool = False) -> ConfigFile:
        if not path.exists():
            if missing_ok:
                return cls(path, {"apiVersion": "v1", "kind": "Config"})
            raise ConfigError(
                f"no configuration at {path}: pass --config, set ${ENV_VAR}, or run "
                "`orchestrator init` and copy its admin.conf there"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: malformed YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top")
        return cls(path, data)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.data, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    @property
    def current_context(self) -> str:
        return str(self.data.get("current-context") or "")

    def context_names(self) -> list[str]:
        return [str(c.get("name")) for c in self.data["contexts"]]

    def context(self, name: str) -> dict[str, Any]:
        return _named(self.data["contexts"], name, "context", self.path)

    def use_context(self, name: str) -> None:
        self.context(name)  # must exist
        self.data["current-context"] = name

    def connection(self, context: str | None = None) -> Connection:
        name = context or self.current_context
        if not name:
            raise ConfigError(
                f"{self.path}: no current-context is set; use `orchctl config use-context NAME`"
            )
        ctx = self.context(name)
        cluster = _named(self.data["clusters"], str(ctx.get("cluster")), "cluster", self.path)
        user = _named(self.data["users"], str(ctx.get("user")), "user", self.path)
        if not cluster.get("server"):
            raise ConfigError(f'{self.path}: cluster "{ctx.get("cluster")}" has no server')
        return Connection(
            server=str(cluster["server"]),
            ca_pem=_data(cluster, "certificate-authority", self.path),
            cert_pem=_data(user, "client-certificate", self.path),
            key_pem=_data(user, "client-key", self.path),
            token=str(user.get("token") or ""),
            namespace=str(ctx.get("namespace") or "default"),
            context=name,
        )

    def set_entry(self, section: str, name: str, key: str, body: dict[str, Any]) -> None:
        items = self.data[section]
        for item in items:
            if item.get("name") == name:
                item[key] = body
                return
        items.append({"name": name, key: body})

    def add_context(
        self,
        *,
        name: str,
        cluster: str,
        server: str,
        ca_pem: bytes,
        user: str,
        cert_pem: bytes = b"",
        key_pem: bytes = b"",
        token: str = "",
        namespace: str = "default",
        make_current: bool = True,
    ) -> None:
        self.set_entry(
            "clusters",
            cluster,
            "cluster",
            {"server": server, "certificate-authority-data": _b64(ca_pem)},
        )
        user_body: dict[str, Any] = {}
        if cert_pem:
            user_body["client-certificate-data"] = _b64(cert_pem)
            user_body["client-key-data"] = _b64(key_pem)
        if token:
            user_body["token"] = token
        self.set_entry("users", user, "user", user_body)
        self.set_entry(
            "contexts", name, "context", {"cluster": cluster, "user": user, "namespace": namespace}
        )
        if make_current or not self.current_context:
            self.data["current-context"] = name
