"""What every command shares: the config file, the context, the namespace and
one API client, opened on first use."""

from __future__ import annotations

from pathlib import Path

from orchestrator.client.client import Client
from orchestrator.client.config import ConfigFile, Connection, resolve_path


class Session:
    def __init__(
        self,
        *,
        config: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        self.config_path: Path = resolve_path(config)
        self.context = context or None
        self.namespace_flag = namespace or None
        self.request_timeout = request_timeout
        self._config: ConfigFile | None = None
        self._connection: Connection | None = None
        self._client: Client | None = None

    def config(self, *, missing_ok: bool = False) -> ConfigFile:
        if self._config is None:
            self._config = ConfigFile.load(self.config_path, missing_ok=missing_ok)
        return self._config

    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = self.config().connection(self.context)
        return self._connection

    @property
    def server(self) -> str:
        """The apiserver address, for messages (empty when the config is unreadable)."""
        return self._connection.server if self._connection is not None else ""

    @property
    def namespace(self) -> str:
        """`-n`, else the context's namespace, else `default`."""
        if self.namespace_flag:
            return self.namespace_flag
        return self.connection().namespace or "default"

    @property
    def namespace_explicit(self) -> bool:
        return self.namespace_flag is not None

    async def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.connection(), timeout=self.request_timeout)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
