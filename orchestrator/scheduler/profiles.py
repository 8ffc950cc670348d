"""Scheduler profiles and their configuration file.

Two profiles are built in: "default-scheduler" (spread load: LeastAllocated)
and "bin-packing" (fill nodes: MostAllocated). A configuration file, shaped
as Kubernetes' KubeSchedulerConfiguration, adds or reshapes profiles: each
starts from the default plugin set and enables, disables or re-weighs
plugins at the filter, score or multiPoint extension points::

    apiVersion: kubescheduler.config.k8s.io/v1
    kind: KubeSchedulerConfiguration
    percentageOfNodesToScore: 0
    profiles:
      - schedulerName: packer
        plugins:
          score:
            disabled: [{name: SelectorSpread}]
            enabled: [{name: NodeResourcesFit, weight: 5}]
        pluginConfig:
          - name: NodeResourcesFit
            args: {scoringStrategy: {type: MostAllocated}}

PreFilter is not configurable on its own: a plugin's PreFilter runs
whenever its Filter does (they share per-cycle data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.scheduler.framework import (
    FilterPlugin,
    PreFilterPlugin,
    Profile,
    ScorePlugin,
    WeightedScore,
)
from orchestrator.scheduler.plugins import FACTORIES, PluginArgsError, build_plugin

DEFAULT_SCHEDULER = "default-scheduler"
BIN_PACKING = "bin-packing"

# Kubernetes' default order: cheap, decisive checks first.
DEFAULT_FILTERS = (
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "VolumeBinding",
    "PodTopologySpread",
    "InterPodAffinity",
)
# Kubernetes' default score weights; SelectorSpread stands in for the
# system-default topology spreading.
DEFAULT_SCORES: tuple[tuple[str, int], ...] = (
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("NodeResourcesFit", 1),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("SelectorSpread", 1),
)
CONFIG_API_VERSIONS = ("kubescheduler.config.k8s.io/v1", "kubescheduler.config.k8s.io/v1beta3")
EXTENSION_POINTS = ("multiPoint", "filter", "score")


class ConfigError(ValueError):
    """A scheduler configuration that cannot be used; the message names the
    file and the field."""


@dataclass
class SchedulerConfig:
    profiles: list[Profile] = field(default_factory=list)
    percentage_of_nodes_to_score: int = 0


@dataclass
class ProfileSpec:
    """A profile as plugin names, weights and args, before the plugins exist."""

    scheduler_name: str
    filters: list[str] = field(default_factory=lambda: list(DEFAULT_FILTERS))
    scores: list[tuple[str, int]] = field(default_factory=lambda: list(DEFAULT_SCORES))
    args: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    percentage_of_nodes_to_score: int | None = None


def build_profile(spec: ProfileSpec) -> Profile:
    """Instantiate the plugins, one object per name shared by its extension points."""
    instances: dict[str, object] = {}

    def instance(name: str) -> object:
        if name not in instances:
            instances[name] = build_plugin(name, spec.args.get(name))
        return instances[name]

    profile = Profile(
        spec.scheduler_name, percentage_of_nodes_to_score=spec.percentage_of_nodes_to_score
    )
    for name in spec.filters:
        plugin = instance(name)
        if not isinstance(plugin, FilterPlugin):
            raise PluginArgsError(f"plugin {name!r} has no filter extension point")
        profile.filters.append(plugin)
        if isinstance(plugin, PreFilterPlugin):
            profile.pre_filters.append(plugin)
    for name, weight in spec.scores:
        plugin = instance(name)
        if not isinstance(plugin, ScorePlugin):
            raise PluginArgsError(f"plugin {name!r} has no score extension point")
        if weight > 0:
            profile.scores.append(WeightedScore(plugin, weight))
    return profile


def default_profile_specs() -> list[ProfileSpec]:
    packing = ProfileSpec(BIN_PACKING)
    packing.args["NodeResourcesFit"] = {"scoringStrategy": {"type": "MostAllocated"}}
    # Packing means the fuller node wins: resource use outweighs everything
    # soft, and owner spreading (which pulls the other way) is off.
    packing.scores = [
        (name, 5 if name == "NodeResourcesFit" else weight)
        for name, weight in DEFAULT_SCORES
        if name != "SelectorSpread"
    ]
    return [ProfileSpec(DEFAULT_SCHEDULER), packing]


def default_profiles() -> list[Profile]:
    return [build_profile(s) for s in default_profile_specs()]


# -- the configuration file ------------------------------------------------------


def load_config(path: str | Path) -> SchedulerConfig:
    """Read a KubeSchedulerConfiguration-like YAML file into profiles.

    The built-in profiles stay available unless the file redefines their
    schedulerName. Raises ConfigError naming the file and field at fault."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the scheduler configuration: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(doc: Any) -> SchedulerConfig:
    if not isinstance(doc, Mapping):
        raise ConfigError("the configuration must be a mapping (a KubeSchedulerConfiguration)")
    api_version = doc.get("apiVersion")
    if api_version is not None and api_version not in CONFIG_API_VERSIONS:
        raise ConfigError(
            f"apiVersion: {api_version!r} is not supported (use {CONFIG_API_VERSIONS[0]})"
        )
    kind = doc.get("kind")
    if kind is not None and kind != "KubeSchedulerConfiguration":
        raise ConfigError(f"kind: {kind!r} is not KubeSchedulerConfiguration")
    config = SchedulerConfig(
        percentage_of_nodes_to_score=_percentage(
            doc.get("percentageOfNodesToScore", 0), "percentageOfNodesToScore"
        )
        or 0
    )
    specs = {s.scheduler_name: s for s in default_profile_specs()}
    raw_profiles = doc.get("profiles") or []
    if not isinstance(raw_profiles, list):
        raise ConfigError("profiles: must be a list")
    seen: set[str] = set()
    for i, raw in enumerate(raw_profiles):
        spec = _profile_spec(raw, f"profiles[{i}]")
        if spec.scheduler_name in seen:
            raise ConfigError(
                f"profiles[{i}].schedulerName: {spec.scheduler_name!r} is defined twice"
            )
        seen.add(spec.scheduler_name)
        specs[spec.scheduler_name] = spec
    for name, spec in specs.items():
        try:
            config.profiles.append(build_profile(spec))
        except PluginArgsError as exc:
            raise ConfigError(f"profile {name!r}: {exc}") from None
    return config


def _percentage(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise ConfigError(f"{where}: must be an integer from 0 to 100, got {value!r}")
    return value


def _profile_spec(raw: Any, where: str) -> ProfileSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = set(raw) - {"schedulerName", "plugins", "pluginConfig", "percentageOfNodesToScore"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    name = raw.get("schedulerName")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.schedulerName: required, a non-empty string")
    spec = ProfileSpec(name)
    spec.percentage_of_nodes_to_score = _percentage(
        raw.get("percentageOfNodesToScore"), f"{where}.percentageOfNodesToScore"
    )
    plugins = raw.get("plugins") or {}
    if not isinstance(plugins, Mapping):
        raise ConfigError(f"{where}.plugins: must be a mapping")
    for point in plugins:
        if point not in EXTENSION_POINTS:
            hint = " (PreFilter follows Filter here)" if point == "preFilter" else ""
            raise ConfigError(
                f"{where}.plugins.{point}: unsupported extension point{hint}; "
                f"use one of {', '.join(EXTENSION_POINTS)}"
            )
    # multiPoint first, then the specific points, as Kubernetes merges them.
    for point in EXTENSION_POINTS:
        if point in plugins:
            _apply_point(spec, point, plugins[point], f"{where}.plugins.{point}")
    configs = raw.get("pluginConfig") or []
    if not isinstance(configs, list):
        raise ConfigError(f"{where}.pluginConfig: must be a list")
    for j, pc in enumerate(configs):
        at = f"{where}.pluginConfig[{j}]"
        if not isinstance(pc, Mapping) or not isinstance(pc.get("name"), str):
            raise ConfigError(f"{at}: needs a name")
        if pc["name"] not in FACTORIES:
            raise ConfigError(f"{at}.name: {_unknown(pc['name'])}")
        args = pc.get("args") or {}
        if not isinstance(args, Mapping):
            raise ConfigError(f"{at}.args: must be a mapping")
        try:
            build_plugin(pc["name"], args)  # check the args now, where we can say where
        except PluginArgsError as exc:
            raise ConfigError(f"{at}.args: {exc}") from None
        spec.args[pc["name"]] = args
    return spec


def _unknown(name: Any) -> str:
    return f"unknown plugin {name!r} (known: {', '.join(sorted(FACTORIES))})"


def _entries(raw: Any, where: str) -> list[tuple[str, int | None]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: must be a list of {{name, weight}}")
    out: list[tuple[str, int | None]] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}[{i}]: needs a name")
        name = entry["name"]
        if name != "*" and name not in FACTORIES:
            raise ConfigError(f"{where}[{i}].name: {_unknown(name)}")
        weight = entry.get("weight")
        if weight is not None and (
            not isinstance(weight, int) or isinstance(weight, bool) or weight < 0
        ):
            raise ConfigError(f"{where}[{i}].weight: must be a non-negative integer")
        out.append((name, weight))
    return out


def _has(name: str, point: str) -> bool:
    plugin = build_plugin(name)
    return isinstance(plugin, FilterPlugin if point == "filter" else ScorePlugin)


def _apply_point(spec: ProfileSpec, point: str, raw: Any, where: str) -> None:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping with enabled and/or disabled")
    points: Sequence[str] = ("filter", "score") if point == "multiPoint" else (point,)
    for name, _ in _entries(raw.get("disabled"), f"{where}.disabled"):
        for p in points:
            if p == "filter":
                spec.filters = [] if name == "*" else [f for f in spec.filters if f != name]
            else:
                spec.scores = [] if name == "*" else [s for s in spec.scores if s[0] != name]
    for i, (name, weight) in enumerate(_entries(raw.get("enabled"), f"{where}.enabled")):
        if name == "*":
            raise ConfigError(f"{where}.enabled[{i}].name: '*' only disables")
        applicable = [p for p in points if _has(name, p)]
        if not applicable:
            raise ConfigError(
                f"{where}.enabled[{i}]: plugin {name!r} has no {point} extension point"
            )
        for p in applicable:
            if p == "filter":
                if name not in spec.filters:
                    spec.filters.append(name)
            else:
                default = dict(DEFAULT_SCORES).get(name, 1)
                chosen = default if weight is None else weight
                spec.scores = [s for s in spec.scores if s[0] != name] + [(name, chosen)]
