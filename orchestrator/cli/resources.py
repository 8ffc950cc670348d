"""What users type to name objects: `pods`, `deploy,svc`, `all`, `pod/x`, `TYPE NAME...`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.api.kinds import KindInfo, UnknownKindError, kind_info, resolve_resource
from orchestrator.api.selectors import SelectorError, parse_field_selector, parse_label_selector
from orchestrator.cli.errors import CliError

# kubectl's `all` category.
ALL_KINDS = (
    "Pod",
    "Service",
    "DaemonSet",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "CronJob",
    "Job",
)


@dataclass
class Selection:
    """One resource type and the names asked for (none: every object that matches)."""

    info: KindInfo
    names: list[str] = field(default_factory=list)


def resolve_type(name: str) -> KindInfo:
    try:
        return resolve_resource(name)
    except UnknownKindError as exc:
        raise CliError(str(exc)) from None


def resolve_types(text: str) -> list[KindInfo]:
    """`deploy,svc` or `all`: the kinds, in order, without repeats."""
    found: list[KindInfo] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise CliError(f'the server doesn\'t have a resource type "{text}"')
        infos = [kind_info(k) for k in ALL_KINDS] if part == "all" else [resolve_type(part)]
        for info in infos:
            if info not in found:
                found.append(info)
    return found


def parse_resource_args(args: Sequence[str], *, verb: str = "get") -> list[Selection]:
    """`TYPE[,TYPE] [NAME...]` or `TYPE/NAME [TYPE/NAME...]`."""
    if not args:
        raise CliError(
            f'you must specify the type of resource to {verb}. Use "orchctl api-resources" '
            "for a complete list of supported resources"
        )
    if "/" in args[0]:
        selections: list[Selection] = []
        for arg in args:
            type_text, sep, name = arg.partition("/")
            if not sep:
                raise CliError(
                    "there is no need to specify a resource type as a separate argument when "
                    "passing arguments in resource/name form (e.g. 'orchctl get resource/<name>' "
                    "instead of 'orchctl get resource resource/<name>'"
                )
            if not name:
                raise CliError(
                    f'arguments in resource/name form must have a single resource and name: "{arg}"'
                )
            info = resolve_type(type_text)
            if selections and selections[-1].info == info:
                selections[-1].names.append(name)
            else:
                selections.append(Selection(info, [name]))
        return selections
    infos = resolve_types(args[0])
    names = list(args[1:])
    for name in names:
        if "/" in name:
            raise CliError(
                "there is no need to specify a resource type as a separate argument when "
                "passing arguments in resource/name form (e.g. 'orchctl get resource/<name>' "
                "instead of 'orchctl get resource resource/<name>'"
            )
    return [Selection(info, list(names)) for info in infos]


def check_label_selector(text: str) -> str:
    if text:
        try:
            parse_label_selector(text)
        except SelectorError as exc:
            raise CliError(str(exc)) from None
    return text


def check_field_selector(text: str, info: KindInfo) -> str:
    if text:
        try:
            parse_field_selector(text, info.fields)
        except SelectorError as exc:
            raise CliError(f"{exc} (for {info.resource})") from None
    return text
