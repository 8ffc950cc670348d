"""Run the controllers of the control plane over one API connection.

Every controller is registered by name in CONTROLLERS; `--controllers` picks
them as kube-controller-manager's flag does: `*` is every controller, `name`
adds one, `-name` removes one (`*,-deployment` runs all but the Deployment
controller).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from certs.bundle import ClusterPKI
from orchestrator.client.client import Client
from orchestrator.client.config import Connection
from orchestrator.controllers.base import Controller
from orchestrator.controllers.cronjob import CronJobController
from orchestrator.controllers.csr_signer import CSRSigner
from orchestrator.controllers.daemonset import DaemonSetController
from orchestrator.controllers.deployment import DeploymentController
from orchestrator.controllers.endpoints import EndpointsController
from orchestrator.controllers.garbage_collector import GarbageCollector
from orchestrator.controllers.hpa import HorizontalPodAutoscalerController
from orchestrator.controllers.job import JobController
from orchestrator.controllers.node_ipam import NodeIPAMController
from orchestrator.controllers.node_lifecycle import NodeLifecycleController
from orchestrator.controllers.node_lifecycle_podgc import OrphanedPodCollector
from orchestrator.controllers.pv_binder import PersistentVolumeBinder
from orchestrator.controllers.replicaset import ReplicaSetController
from orchestrator.controllers.resourcequota import ResourceQuotaController
from orchestrator.controllers.statefulset import StatefulSetController
from orchestrator.controllers.ttl_after_finished import TTLAfterFinishedController
from orchestrator.controllers.volume_protection import VolumeProtectionController

log = logging.getLogger(__name__)

Factory = Callable[[Client, ClusterPKI], Controller]

CONTROLLERS: dict[str, Factory] = {
    "csrsigning": lambda client, pki: CSRSigner(client, pki.cluster_ca()),
    "garbagecollector": lambda client, pki: GarbageCollector(client),
    "nodeipam": lambda client, pki: NodeIPAMController(client),
    "nodelifecycle": lambda client, pki: NodeLifecycleController(client),
    "podgc": lambda client, pki: OrphanedPodCollector(client),
    "endpoint": lambda client, pki: EndpointsController(client),
    "job": lambda client, pki: JobController(client),
    "cronjob": lambda client, pki: CronJobController(client),
    "ttl-after-finished": lambda client, pki: TTLAfterFinishedController(client),
    "statefulset": lambda client, pki: StatefulSetController(client),
    "daemonset": lambda client, pki: DaemonSetController(client),
    "persistentvolume-binder": lambda client, pki: PersistentVolumeBinder(client),
    "volume-protection": lambda client, pki: VolumeProtectionController(client),
    "replicaset": lambda client, pki: ReplicaSetController(client),
    "deployment": lambda client, pki: DeploymentController(client),
    "horizontalpodautoscaling": lambda client, pki: HorizontalPodAutoscalerController(client),
    "resourcequota": lambda client, pki: ResourceQuotaController(client),
}


class UnknownControllerError(ValueError):
    pass


def select_controllers(spec: Iterable[str]) -> list[str]:
    """Names chosen by a --controllers list, in registration order."""
    chosen: set[str] = set()
    removed: set[str] = set()
    for item in spec:
        item = item.strip()
        if not item:
            continue
        name = item.removeprefix("-")
        if name != "*" and name not in CONTROLLERS:
            known = ", ".join(sorted(CONTROLLERS))
            raise UnknownControllerError(f'unknown controller "{name}" (known: {known})')
        if item == "*":
            chosen.update(CONTROLLERS)
        elif item.startswith("-"):
            removed.add(name)
        else:
            chosen.add(name)
    return [name for name in CONTROLLERS if name in chosen and name not in removed]


class ControllerManager:
    def __init__(self, conn: Connection, pki: ClusterPKI, enabled: Iterable[str] = ("*",)) -> None:
        self.client = Client(conn)
        self.controllers: list[Controller] = [
            CONTROLLERS[name](self.client, pki) for name in select_controllers(enabled)
        ]

    async def start(self) -> None:
        for controller in self.controllers:
            await controller.start()
            log.info("controller %s started", controller.name)

    async def stop(self) -> None:
        for controller in self.controllers:
            await controller.stop()
        await self.client.close()
