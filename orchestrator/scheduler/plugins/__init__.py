"""The plugin registry: names as Kubernetes spells them, and how to build each
from its pluginConfig args."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.scheduler.plugins.balanced_allocation import BalancedAllocation
from orchestrator.scheduler.plugins.image_locality import ImageLocality
from orchestrator.scheduler.plugins.inter_pod_affinity import InterPodAffinity
from orchestrator.scheduler.plugins.node_affinity import NodeAffinity
from orchestrator.scheduler.plugins.node_name import NodeName
from orchestrator.scheduler.plugins.node_ports import NodePorts
from orchestrator.scheduler.plugins.node_resources_fit import LEAST_ALLOCATED, NodeResourcesFit
from orchestrator.scheduler.plugins.node_unschedulable import NodeUnschedulable
from orchestrator.scheduler.plugins.pod_topology_spread import PodTopologySpread
from orchestrator.scheduler.plugins.selector_spread import SelectorSpread
from orchestrator.scheduler.plugins.taint_toleration import TaintToleration
from orchestrator.scheduler.plugins.volume_binding import VolumeBinding

__all__ = ["FACTORIES", "PluginArgsError", "build_plugin"]


class PluginArgsError(ValueError):
    """pluginConfig args a plugin cannot use."""


def _no_args(cls: Callable[[], object]) -> Callable[[Mapping[str, Any]], object]:
    def build(args: Mapping[str, Any]) -> object:
        if args:
            raise PluginArgsError(f"takes no args, got {sorted(args)}")
        return cls()

    return build


def _resources_fit(args: Mapping[str, Any]) -> object:
    unknown = set(args) - {"scoringStrategy"}
    if unknown:
        raise PluginArgsError(f"unknown args {sorted(unknown)} (known: scoringStrategy)")
    strategy = args.get("scoringStrategy") or {}
    if not isinstance(strategy, Mapping):
        raise PluginArgsError("scoringStrategy must be a mapping")
    weights = {"cpu": 1, "memory": 1}
    resources = strategy.get("resources")
    if resources is not None:
        if not isinstance(resources, list):
            raise PluginArgsError("scoringStrategy.resources must be a list")
        weights = {"cpu": 0, "memory": 0}
        for i, r in enumerate(resources):
            name = r.get("name") if isinstance(r, Mapping) else None
            if name not in weights:
                raise PluginArgsError(
                    f"scoringStrategy.resources[{i}].name must be cpu or memory, got {name!r}"
                )
            weight = r.get("weight", 1)
            if not isinstance(weight, int) or isinstance(weight, bool):
                raise PluginArgsError(f"scoringStrategy.resources[{i}].weight must be an integer")
            weights[name] = weight
    try:
        return NodeResourcesFit(
            str(strategy.get("type", LEAST_ALLOCATED)),
            cpu_weight=weights["cpu"],
            memory_weight=weights["memory"],
        )
    except ValueError as exc:
        raise PluginArgsError(str(exc)) from None


def _inter_pod_affinity(args: Mapping[str, Any]) -> object:
    unknown = set(args) - {"hardPodAffinityWeight"}
    if unknown:
        raise PluginArgsError(f"unknown args {sorted(unknown)} (known: hardPodAffinityWeight)")
    weight = args.get("hardPodAffinityWeight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
        raise PluginArgsError("hardPodAffinityWeight must be an integer from 0 to 100")
    return InterPodAffinity(weight)


FACTORIES: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "NodeUnschedulable": _no_args(NodeUnschedulable),
    "NodeName": _no_args(NodeName),
    "TaintToleration": _no_args(TaintToleration),
    "NodeAffinity": _no_args(NodeAffinity),
    "NodePorts": _no_args(NodePorts),
    "NodeResourcesFit": _resources_fit,
    "VolumeBinding": _no_args(VolumeBinding),
    "PodTopologySpread": _no_args(PodTopologySpread),
    "InterPodAffinity": _inter_pod_affinity,
    "NodeResourcesBalancedAllocation": _no_args(BalancedAllocation),
    "ImageLocality": _no_args(ImageLocality),
    "SelectorSpread": _no_args(SelectorSpread),
}


def build_plugin(name: str, args: Mapping[str, Any] | None = None) -> object:
    factory = FACTORIES.get(name)
    if factory is None:
        raise PluginArgsError(f"unknown plugin {name!r} (known: {', '.join(sorted(FACTORIES))})")
    return factory(args or {})
