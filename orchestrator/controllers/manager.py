"""Run the controllers of the control plane over one API connection.

Every controller is registered by name in CONTROLLERS; `--controllers` picks
them as kube-controller-manager's flag does: `*` is every controller, `name`
adds one, `-name` removes one (`*,-deployment` runs all but the Deployment
controller).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ControllerOptions:
    """Per-controller settings, from the command line (kube-controller-manager's
    flags of the same names)."""

    # A node silent this long gets Ready=Unknown and the unreachable taints.
    node_monitor_grace_period: float = 50.0
    # The same for a node that has never posted Ready.
    node_startup_grace_period: float = 60.0

    def __post_init__(self) -> None:
        for name in ("node_monitor_grace_period", "node_startup_grace_period"):
            if getattr(self, name) <= 0:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be positive, got {getattr(self, name)}")


Factory = Callable[[Client, ClusterPKI, ControllerOptions], Controller]

CONTROLLERS: dict[str, Factory] = {
    "csrsigning": lambda client, pki, opts: CSRSigner(client, pki.cluster_ca()),
    "garbagecollector": lambda client, pki, opts: GarbageCollector(client),
    "nodeipam": lambda client, pki, opts: NodeIPAMController(client),
    "nodelifecycle": lambda client, pki, opts: NodeLifecycleController(
        client,
        grace_period=opts.node_monitor_grace_period,
        startup_grace_period=opts.node_startup_grace_period,
    ),
    "podgc": lambda client, pki, opts: OrphanedPodCollector(client),
    "endpoint": lambda client, pki, opts: EndpointsController(client),
    "job": lambda client, pki, opts: JobController(client),
    "cronjob": lambda client, pki, opts: CronJobController(client),
    "ttl-after-finished": lambda client, pki, opts: TTLAfterFinishedController(client),
    "statefulset": lambda client, pki, opts: StatefulSetController(client),
    "daemonset": lambda client, pki, opts: DaemonSetController(client),
    "persistentvolume-binder": lambda client, pki, opts: PersistentVolumeBinder(client),
    "volume-protection": lambda client, pki, opts: VolumeProtectionController(client),
    "replicaset": lambda client, pki, opts: ReplicaSetController(client),
    "deployment": lambda client, pki, opts: DeploymentController(client),
    "horizontalpodautoscaling": lambda client, pki, opts: HorizontalPodAutoscalerController(client),
    "resourcequota": lambda client, pki, opts: ResourceQuotaController(client),
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
    def __init__(
        self,
        conn: Connection,
        pki: ClusterPKI,
        enabled: Iterable[str] = ("*",),
        options: ControllerOptions | None = None,
    ) -> None:
        self.client = Client(conn)
        options = options or ControllerOptions()
        self.controllers: list[Controller] = [
            CONTROLLERS[name](self.client, pki, options) for name in select_controllers(enabled)
        ]

    async def start(self) -> None:
        for controller in self.controllers:
            await controller.start()
            log.info("controller %s started", controller.name)

    async def stop(self) -> None:
        for controller in self.controllers:
            await controller.stop()
        await self.client.close()
