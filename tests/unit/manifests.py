"""Kubernetes manifests as dicts, shared by the admission tests."""

from __future__ import annotations

from typing import Any


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "busybox:1.36", **extra}


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"containers": [container()], **spec},
        "status": {"phase": "Pending"},
    }


def template(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels if labels is not None else {"app": "web"}},
        "spec": {"containers": [container()], **spec},
    }


def deployment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(), **spec},
    }


def workload(kind: str, **spec: Any) -> dict[str, Any]:
    doc = deployment(**spec)
    doc["kind"] = kind
    return doc


def job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pi", "namespace": "demo"},
        "spec": {"template": template(restartPolicy="Never"), **spec},
    }
