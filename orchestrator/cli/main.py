"""orchctl: the command line of the orchestrator, with kubectl's verbs and flags.

    orchctl [--config FILE] [--context NAME] [-n NS] VERB ...

This module builds the parser and runs one verb; each verb lives in its own
module. Every failure ends as one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from orchestrator.api.codec import DecodeError
from orchestrator.api.duration import parse_duration
from orchestrator.api.kinds import UnknownKindError
from orchestrator.api.selectors import SelectorError
from orchestrator.cli import (
    apply,
    autoscale,
    cluster,
    config_cmds,
    delete,
    describe,
    drain,
    get,
    image,
    info_cmds,
    labels,
    logs,
    rollout,
    scale,
    token,
    top,
)
from orchestrator.cli import exec as exec_cmd
from orchestrator.cli.errors import (
    CliError,
    from_server,
    one_line,
    report,
    report_error,
    unreachable,
)
from orchestrator.cli.manifests import ManifestErrors
from orchestrator.cli.session import Session
from orchestrator.client.client import ApiError, UnavailableError
from orchestrator.client.config import ConfigError

Command = Callable[[Session, argparse.Namespace], Awaitable[int]]


class _Parser(argparse.ArgumentParser):
    """argparse that fails like kubectl: `error: ...` and exit status 1."""

    def error(self, message: str) -> NoReturn:
        report(f"error: {message}")
        report(f"See '{self.prog} --help' for usage.")
        raise SystemExit(1)


def _globals() -> _Parser:
    """Flags accepted before or after the verb. SUPPRESS keeps a subcommand from
    overwriting a value given before the verb with its default."""
    p = _Parser(add_help=False)
    p.add_argument(
        "--config",
        "--kubeconfig",
        dest="config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="configuration file (else $ORCHCONFIG, ~/.orch/config)",
    )
    p.add_argument(
        "--context",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="the context of the configuration file to use",
    )
    p.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        metavar="NS",
        help="the namespace of this request",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="how long to wait for one API call (default 30)",
    )
    return p


def _add_files(p: argparse.ArgumentParser, what: str, required: bool = False) -> None:
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        required=required,
        metavar="FILE",
        help=f"file, directory or - (stdin) with the objects to {what}",
    )
    p.add_argument(
        "-R",
        "--recursive",
        action="store_true",
        help="process the directory given with -f recursively",
    )


def _add_dry_run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        nargs="?",
        const="client",
        default="none",
        metavar="none|client|server",
        help="only print what would be sent (client) or have the server check "
        "everything without persisting it (server)",
    )


def _add_selector(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-l", "--selector", default="", metavar="SEL", help="label selector, e.g. app=web,tier!=db"
    )


def _add_all_namespaces(p: argparse.ArgumentParser) -> None:
    p.add_argument("-A", "--all-namespaces", action="store_true", help="across every namespace")


def build_parser() -> argparse.ArgumentParser:
    # Two copies: argparse shares a parent's actions with every child, and the
    # defaults set below must not reach the subcommands' copies.
    common = _globals()
    parser = _Parser(
        prog="orchctl",
        parents=[_globals()],
        description="Control the orchestrator's objects, the way kubectl does.",
    )
    parser.set_defaults(config=None, context=None, namespace=None, request_timeout=30.0)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    def verb(name: str, help_text: str, func: Command, **kw: Any) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, parents=[common], help=help_text, description=help_text, **kw)
        p.set_defaults(func=func)
        return p

    # apply
    p = verb("apply", "Create or update objects from manifests (three-way merge)", apply.run_apply)
    _add_files(p, "apply")
    _add_dry_run(p)

    # get
    p = verb("get", "List objects as tables, YAML, JSON or names", get.run_get)
    p.add_argument("resources", nargs="*", metavar="TYPE[,TYPE] [NAME...] | TYPE/NAME")
    p.add_argument("-o", "--output", default="", metavar="FORMAT", help="wide, yaml, json or name")
    _add_selector(p)
    p.add_argument(
        "--field-selector",
        default="",
        metavar="SEL",
        help="field selector, e.g. status.phase=Running",
    )
    _add_all_namespaces(p)
    p.add_argument("-w", "--watch", action="store_true", help="after listing, print every change")
    p.add_argument("--watch-only", action="store_true", help="print changes only")
    p.add_argument(
        "--output-watch-events",
        action="store_true",
        help="with --watch, print the event type (ADDED, MODIFIED, DELETED)",
    )
    p.add_argument(
        "--watch-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --watch, stop after this long (exit 0)",
    )
    p.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    p.add_argument(
        "-L",
        "--label-columns",
        action="append",
        default=[],
        metavar="KEY",
        help="a column with the value of this label (repeatable, or comma list)",
    )
    p.add_argument("--no-headers", action="store_true", help="print tables without headers")
    _add_files(p, "get")

    # describe
    p = verb(
        "describe", "Show one or more objects in detail, with their events", describe.run_describe
    )
    p.add_argument("resources", nargs="*", metavar="TYPE [NAME...] | TYPE/NAME")
    _add_selector(p)
    _add_all_namespaces(p)
    _add_files(p, "describe")
    p.add_argument(
        "--show-events",
        default=True,
        action=argparse.BooleanOptionalAction,
        help="list the object's events (default true)",
    )

    # delete
    p = verb("delete", "Delete objects by name, label selector, file or --all", delete.run_delete)
    p.add_argument("resources", nargs="*", metavar="TYPE [NAME...] | TYPE/NAME")
    _add_files(p, "delete")
    _add_selector(p)
    p.add_argument("--field-selector", default="", metavar="SEL")
    p.add_argument("--all", action="store_true", help="every object of the type(s)")
    _add_all_namespaces(p)
    p.add_argument(
        "--grace-period",
        type=int,
        default=-1,
        metavar="N",
        help="seconds a pod gets to stop (-1: its own default)",
    )
    p.add_argument("--now", action="store_true", help="same as --grace-period=1")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --grace-period=0, remove at once without waiting for the node",
    )
    p.add_argument(
        "--cascade",
        nargs="?",
        const="background",
        default="background",
        metavar="background|foreground|orphan",
        help="what happens to dependents (default background)",
    )
    p.add_argument(
        "--wait",
        default=True,
        type=_bool_flag,
        nargs="?",
        const=True,
        metavar="true|false",
        help="wait until the objects are gone (default true)",
    )
    p.add_argument(
        "--timeout",
        type=_duration_seconds,
        default=60.0,
        metavar="DURATION",
        help="how long --wait waits, e.g. 30s or 2m (default 60s)",
    )
    p.add_argument(
        "--ignore-not-found", action="store_true", help="a missing object is not an error"
    )
    _add_dry_run(p)

    # label / annotate
    for name, func, what in (
        ("label", labels.run_label, "labels"),
        ("annotate", labels.run_annotate, "annotations"),
    ):
        p = verb(name, f"Add, change (--overwrite) or remove (key-) {what}", func)
        p.add_argument("args", nargs="*", metavar="TYPE NAME... KEY=VAL... KEY-...")
        p.add_argument(
            "--overwrite",
            action="store_true",
            help=f"allow changing {what} that already have a value",
        )
        _add_selector(p)
        p.add_argument("--all", action="store_true", help="every object of the type")
        _add_all_namespaces(p)
        p.add_argument("--list", action="store_true", help=f"print the {what} instead")
        p.add_argument(
            "--resource-version",
            default="",
            metavar="RV",
            help="update only if the object is still at this resourceVersion",
        )
        _add_files(p, name)
        _add_dry_run(p)

    # create
    p = verb(
        "create",
        "Create objects from manifests (existing ones are an error), or a namespace",
        apply.run_create_files,
    )
    _add_files(p, "create")
    _add_dry_run(p)
    create_sub = p.add_subparsers(dest="what", metavar="WHAT", parser_class=_Parser)
    q = create_sub.add_parser(
        "namespace", aliases=["ns"], parents=[common], help="Create a namespace"
    )
    q.add_argument("name", metavar="NAME")
    _add_dry_run(q)
    q.set_defaults(func=apply.run_create_namespace)

    # scale, rollout
    p = verb(
        "scale",
        "Set the number of replicas of a deployment, replicaset or statefulset",
        scale.run_scale,
    )
    scale.add_arguments(p)
    p = verb(
        "rollout", "Follow, pause, resume, restart or undo a rollout", _usage(p_name="rollout")
    )
    rollout.add_parsers(p, common, _Parser, _duration_seconds)

    # cordon, uncordon, drain
    p = verb("cordon", "Mark nodes unschedulable", drain.run_cordon)
    drain.add_cordon_arguments(p)
    p = verb("uncordon", "Mark nodes schedulable again", drain.run_uncordon)
    drain.add_cordon_arguments(p)
    p = verb(
        "drain",
        "Cordon a node, then evict its pods and wait until they are gone",
        drain.run_drain,
    )
    drain.add_drain_arguments(p, _duration_seconds)

    # token
    p = verb("token", "Manage bootstrap tokens for joining nodes", _usage(p_name="token"))
    token_sub = p.add_subparsers(dest="what", metavar="ACTION", parser_class=_Parser)
    q = token_sub.add_parser("create", parents=[common], help="Create a bootstrap token")
    q.add_argument(
        "--ttl",
        default="24h",
        type=_duration_seconds,
        metavar="DURATION",
        help="how long the token is valid, e.g. 24h, 30m (default 24h)",
    )
    q.add_argument("--description", default="", metavar="TEXT")
    q.add_argument(
        "--print-join-command",
        action="store_true",
        help="print the whole `orch-agent join` command",
    )
    q.set_defaults(func=token.run_create)
    q = token_sub.add_parser("list", parents=[common], help="List bootstrap tokens")
    q.set_defaults(func=token.run_list)
    q = token_sub.add_parser("delete", parents=[common], help="Delete bootstrap tokens")
    q.add_argument("tokens", nargs="+", metavar="ID|TOKEN")
    q.set_defaults(func=token.run_delete)

    # logs, exec
    p = verb("logs", "Print the logs of a container in a pod", logs.run_logs)
    logs.add_arguments(p)
    p = verb("exec", "Run a command in a container of a pod", exec_cmd.run_exec)
    exec_cmd.add_arguments(p)

    # config
    p = verb("config", "View and change the configuration file", _usage(p_name="config"))
    config_cmds.add_parsers(p, common, _Parser)

    # cluster, image: local clusters (deploy/local)
    p = verb("cluster", "Create, remove and list local clusters", _usage(p_name="cluster"))
    cluster.add_parsers(p, common, _Parser)
    p = verb("image", "Load images into a local cluster", _usage(p_name="image"))
    image.add_parsers(p, common, _Parser)

    # version, api-resources
    p = verb("version", "Print the client and server versions", info_cmds.run_version)
    p.add_argument("--client", action="store_true", help="only the client version")
    p.add_argument("-o", "--output", default="", metavar="yaml|json")
    p = verb("api-resources", "List the kinds the API serves", info_cmds.run_api_resources)
    p.add_argument("-o", "--output", default="", metavar="wide|name")
    p.add_argument(
        "--namespaced",
        type=_bool_flag,
        default=None,
        metavar="true|false",
        help="only namespaced (true) or cluster-scoped (false) kinds",
    )
    p.add_argument("--no-headers", action="store_true")

    # top, autoscale: resource metrics and the HorizontalPodAutoscaler
    p = verb("top", "Show CPU and memory use of pods or nodes", _usage(p_name="top"))
    top.add_parsers(p, common, _Parser)
    p = verb(
        "autoscale", "Create a HorizontalPodAutoscaler for a workload", autoscale.run_autoscale
    )
    autoscale.add_arguments(p)
    return parser


def _usage(p_name: str) -> Command:
    async def run(session: Session, args: argparse.Namespace) -> int:
        raise CliError(f"orchctl {p_name} needs an action; see 'orchctl {p_name} --help'")

    return run


def _bool_flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f'invalid boolean "{value}": use true or false')


def _duration_seconds(value: str) -> float:
    """Go-style durations (`90s`, `1h30m`, `2m`) or plain seconds."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _run(func: Command, session: Session, args: argparse.Namespace) -> int:
    try:
        return await func(session, args)
    finally:
        await session.close()


# Verbs whose positional arguments may come before and after flags, as in
# `orchctl label pods -l app=web tier=front` or `orchctl get pods -n ns web`.
_POSITIONALS = {
    "get": "resources",
    "describe": "resources",
    "delete": "resources",
    "label": "args",
    "annotate": "args",
    "scale": "resources",
    "rollout": "resources",
}


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    argv, remote_command = exec_cmd.split_command(argv)
    args, extras = parser.parse_known_args(argv)
    if remote_command is not None:
        args.command = list(getattr(args, "command", [])) + remote_command
    dest = _POSITIONALS.get(getattr(args, "verb", None) or "")
    flags = [e for e in extras if e.startswith("-") and e != "-"]
    if flags or (extras and dest is None):
        parser.error(f"unrecognized arguments: {' '.join(flags or extras)}")
    if extras and dest is not None:
        setattr(args, dest, list(getattr(args, dest)) + extras)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 1
    session = Session(
        config=args.config,
        context=args.context,
        namespace=args.namespace,
        request_timeout=args.request_timeout,
    )
    try:
        return asyncio.run(_run(func, session, args))
    except KeyboardInterrupt:
        # Ctrl-C ends a watch normally, as kubectl's does.
        return 0 if getattr(args, "watch", False) or getattr(args, "watch_only", False) else 130
    except CliError as exc:
        report_error(exc.message)
    except ManifestErrors as exc:
        for line in exc.lines:
            report_error(line)
    except UnavailableError as exc:
        report(unreachable(session.server or "(unknown)", exc))
    except ApiError as exc:
        report(from_server(exc))
    except ConfigError as exc:
        report_error(str(exc))
    except DecodeError as exc:
        report_error(str(exc))
    except (UnknownKindError, SelectorError) as exc:
        report_error(str(exc).strip("'"))
    except BrokenPipeError:
        # `orchctl get pods | head`: the reader left. Point stdout at /dev/null so
        # the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        report_error(one_line(str(exc)))
    return 1


if __name__ == "__main__":
    sys.exit(main())
