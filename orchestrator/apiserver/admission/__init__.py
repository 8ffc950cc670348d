"""Admission: what happens to an object between the request and the store.

`prepare_create` sets server-owned fields, `apply_defaults` fills in
Kubernetes' defaults, `validate` returns every problem with its field path,
and `check_quota_and_policy` enforces cluster policy that needs other objects.
"""

from __future__ import annotations

from orchestrator.apiserver.admission.defaults import apply_defaults
from orchestrator.apiserver.admission.policy import check_quota_and_policy
from orchestrator.apiserver.admission.prepare import normalize, prepare_create, prepare_update
from orchestrator.apiserver.admission.validation import validate

__all__ = [
    "apply_defaults",
    "check_quota_and_policy",
    "normalize",
    "prepare_create",
    "prepare_update",
    "validate",
]
