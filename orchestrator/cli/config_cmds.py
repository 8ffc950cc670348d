"""`orchctl config ...`: view and change the configuration file, as `kubectl config`."""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

from orchestrator.cli import tabwriter
from orchestrator.cli.errors import CliError
from orchestrator.cli.printers import render_yaml
from orchestrator.cli.session import Session

# Secret material in a configuration file and what `config view` shows instead.
_REDACTED_DATA = ("certificate-authority-data", "client-certificate-data", "client-key-data")
_REDACTED_TEXT = ("token", "password")


def add_parsers(
    parent: argparse.ArgumentParser,
    common: argparse.ArgumentParser,
    parser_class: type[argparse.ArgumentParser],
) -> None:
    sub = parent.add_subparsers(dest="what", metavar="ACTION", parser_class=parser_class)
    p = sub.add_parser("view", parents=[common], help="Print the configuration")
    p.add_argument("--minify", action="store_true", help="only what the current context uses")
    p.add_argument("--raw", action="store_true", help="show certificates, keys and tokens")
    p.add_argument("-o", "--output", default="yaml", metavar="yaml|json")
    p.set_defaults(func=run_view)
    p = sub.add_parser(
        "use-context", aliases=["use"], parents=[common], help="Make a context the current one"
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=run_use_context)
    p = sub.add_parser("get-contexts", parents=[common], help="List the contexts")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--no-headers", action="store_true")
    p.add_argument("-o", "--output", default="", metavar="name")
    p.set_defaults(func=run_get_contexts)
    p = sub.add_parser("current-context", parents=[common], help="Print the current context")
    p.set_defaults(func=run_current_context)
    p = sub.add_parser(
        "set-context",
        parents=[common],
        help="Create or change a context (cluster, user, namespace)",
    )
    p.add_argument("name", nargs="?", default="", metavar="NAME")
    p.add_argument("--current", action="store_true", help="change the current context")
    p.add_argument("--cluster", default=None)
    p.add_argument("--user", default=None)
    p.set_defaults(func=run_set_context)
    p = sub.add_parser("delete-context", parents=[common], help="Remove a context")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=run_delete_context)
    p = sub.add_parser("get-clusters", parents=[common], help="List the clusters")
    p.set_defaults(func=run_get_clusters)


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((i for i in items if i.get("name") == name), None)


def redact(data: dict[str, Any]) -> dict[str, Any]:
    """Certificates and keys as DATA+OMITTED, tokens as REDACTED, as kubectl's view."""
    out = copy.deepcopy(data)
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for item in out.get(section) or []:
            body = item.get(key)
            if not isinstance(body, dict):
                continue
            for field in _REDACTED_DATA:
                if body.get(field):
                    body[field] = "DATA+OMITTED"
            for field in _REDACTED_TEXT:
                if body.get(field):
                    body[field] = "REDACTED"
    return out


def minify(data: dict[str, Any], context: str) -> dict[str, Any]:
    ctx = _named(data.get("contexts") or [], context)
    if ctx is None:
        raise CliError(f'cannot locate context "{context}"')
    body = ctx.get("context") or {}
    out = dict(data)
    out["current-context"] = context
    out["contexts"] = [ctx]
    out["clusters"] = [
        c for c in data.get("clusters") or [] if c.get("name") == body.get("cluster")
    ]
    out["users"] = [u for u in data.get("users") or [] if u.get("name") == body.get("user")]
    return out


def view_document(
    data: dict[str, Any], *, context: str, minified: bool, raw: bool
) -> dict[str, Any]:
    if minified:
        if not context:
            raise CliError("current-context must exist in order to minify")
        data = minify(data, context)
    if not raw:
        data = redact(data)
    # kubectl's order of the top-level keys.
    return {
        "apiVersion": data.get("apiVersion", "v1"),
        "clusters": data.get("clusters") or [],
        "contexts": data.get("contexts") or [],
        "current-context": data.get("current-context", ""),
        "kind": data.get("kind", "Config"),
        "preferences": data.get("preferences") or {},
        "users": data.get("users") or [],
    }


async def run_view(session: Session, args: argparse.Namespace) -> int:
    conf = session.config(missing_ok=True)
    context = session.context or conf.current_context
    doc = view_document(conf.data, context=context, minified=args.minify, raw=args.raw)
    if args.output == "json":
        print(json.dumps(doc, indent=4))
    elif args.output == "yaml":
        print(render_yaml(doc), end="")
    else:
        raise CliError(f'output format "{args.output}" is not supported: use yaml or json')
    return 0


async def run_use_context(session: Session, args: argparse.Namespace) -> int:
    conf = session.config(missing_ok=True)
    if args.name not in conf.context_names():
        raise CliError(f'no context exists with the name: "{args.name}"')
    conf.use_context(args.name)
    conf.save()
    print(f'Switched to context "{args.name}".')
    return 0


async def run_get_contexts(session: Session, args: argparse.Namespace) -> int:
    conf = session.config(missing_ok=True)
    current = conf.current_context
    contexts = conf.data.get("contexts") or []
    if args.names:
        missing = [n for n in args.names if _named(contexts, n) is None]
        if missing:
            raise CliError(f"context {missing[0]} not found")
        contexts = [c for c in contexts if c.get("name") in args.names]
    if args.output == "name":
        for c in contexts:
            print(c.get("name", ""))
        return 0
    if args.output:
        raise CliError(f'output format "{args.output}" is not supported: use name')
    rows = [] if args.no_headers else [["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"]]
    for c in contexts:
        body = c.get("context") or {}
        rows.append(
            [
                "*" if c.get("name") == current else "",
                str(c.get("name", "")),
                str(body.get("cluster", "")),
                str(body.get("user", "")),
                str(body.get("namespace", "") or ""),
            ]
        )
    for line in tabwriter.table(rows):
        print(line)
    return 0


async def run_current_context(session: Session, args: argparse.Namespace) -> int:
    conf = session.config(missing_ok=True)
    if not conf.current_context:
        raise CliError("current-context is not set")
    print(conf.current_context)
    return 0


async def run_set_context(session: Session, args: argparse.Namespace) -> int:
    conf = session.config(missing_ok=True)
    name = args.name
    if args.current:
        if name:
            raise CliError("you cannot specify a name and --current at the same time")
        name = conf.current_context
        if not name:
            raise CliError("no current context is set")
    if not name:
        raise CliError("you must specify a context name or --current")
    existing = _named(conf.data["contexts"], name)
    body: dict[str, Any] = dict((existing or {}).get("context") or {})
    if args.cluster is not None:
        body["cluster"] = args.cluster
    if args.user is not None:
        body["user"] = args.user
    namespace = session.namespace_flag
    if namespace is not None:
        body["namespace"] = namespace
    conf.set_entry("contexts", name, "context", body)
    conf.save()
    print(f'Context "{name}" {"modified" if existing is not None else "created"}.')
    return 0


async def run_delete_context(session: Session, args: argparse.Namespace) -> int:
    conf = session.config()
    contexts = conf.data["contexts"]
    if _named(contexts, args.name) is None:
        raise CliError(f"cannot delete context {args.name}, not in {conf.path}")
    conf.data["contexts"] = [c for c in contexts if c.get("name") != args.name]
    if conf.current_context == args.name:
        print(
            'warning: this removed your active context, use "orchctl config use-context" '
            "to select a different one"
        )
    conf.save()
    print(f"deleted context {args.name} from {conf.path}")
    return 0


async def run_get_clusters(session: Session, args: argparse.Namespace) -> int:
    conf = session.config(missing_ok=True)
    print("NAME")
    for c in conf.data.get("clusters") or []:
        print(c.get("name", ""))
    return 0
