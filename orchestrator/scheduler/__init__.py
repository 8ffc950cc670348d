"""The scheduler: places pending pods on nodes (kube-scheduler's design).

Entry points: Scheduler (the runner), load_config (profiles from a
KubeSchedulerConfiguration-like YAML file), default_profiles().
"""

from orchestrator.scheduler.profiles import (
    BIN_PACKING,
    DEFAULT_SCHEDULER,
    ConfigError,
    SchedulerConfig,
    default_profiles,
    load_config,
)
from orchestrator.scheduler.scheduler import Scheduler

__all__ = [
    "BIN_PACKING",
    "DEFAULT_SCHEDULER",
    "ConfigError",
    "Scheduler",
    "SchedulerConfig",
    "default_profiles",
    "load_config",
]
