"""Run the controllers of the control plane over one API connection."""

from __future__ import annotations

import logging

from certs.bundle import ClusterPKI
from orchestrator.client.client import Client
from orchestrator.client.config import Connection
from orchestrator.controllers.base import Controller
from orchestrator.controllers.csr_signer import CSRSigner
from orchestrator.controllers.garbage_collector import GarbageCollector
from orchestrator.controllers.node_ipam import NodeIPAMController

log = logging.getLogger(__name__)


class ControllerManager:
    def __init__(self, conn: Connection, pki: ClusterPKI) -> None:
        self.client = Client(conn)
        self.controllers: list[Controller] = [
            CSRSigner(self.client, pki.cluster_ca()),
            GarbageCollector(self.client),
            NodeIPAMController(self.client),
        ]

    async def start(self) -> None:
        for controller in self.controllers:
            await controller.start()
            log.info("controller %s started", controller.name)

    async def stop(self) -> None:
        for controller in self.controllers:
            await controller.stop()
        await self.client.close()
