"""`orchctl exec [-i] [-t] POD [-c C] -- COMMAND [ARGS...]`.

As kubectl: the command's stdout and stderr go to ours, its exit status
becomes ours. `-i` sends our stdin until EOF; `-t` with `-i` on a terminal
gives the command a terminal: ours goes into raw mode (restored on the way
out, however we leave) and follows our window size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from orchestrator.cli.errors import CliError, report
from orchestrator.cli.logs import PodNotFound, get_pod, pick_container, pod_name, stream_error
from orchestrator.cli.session import Session
from orchestrator.client.client import ApiError, UnavailableError
from orchestrator.client.streams import ExecSession, pod_exec

STDIN_READ = 32 * 1024
STDIN_QUEUE = 8
NO_TTY = "Unable to use a TTY - input is not a terminal or the right kind of file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    p.add_argument("-t", "--tty", action="store_true", help="stdin is a TTY")
    p.add_argument("-c", "--container", default="", metavar="NAME", help="the container")
    p.add_argument("pod", nargs="?", default="", metavar="POD", help="NAME or pod/NAME")
    p.add_argument("command", nargs="*", metavar="-- COMMAND [ARGS...]")


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """For `exec`, everything after the first `--` is the remote command, flags
    included (`-- sh -c 'ls -l'`): split it off before argparse sees it."""
    if "--" not in argv:
        return argv, None
    at = argv.index("--")
    if "exec" not in argv[:at]:
        return argv, None
    return argv[:at], argv[at + 1 :]


def terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 0, 0
    return size.lines, size.columns


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on `fd` for the block; the saved mode comes back in every case."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_stdin(fd: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
    """On a daemon thread (a blocked read must not keep the process alive):
    stdin in chunks, b"" at EOF. The queue is short: a slow remote slows us."""
    while True:
        try:
            data = os.read(fd, STDIN_READ)
        except OSError:
            data = b""
        try:
            asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
        except Exception:
            return  # the command ended and the loop is gone
        if not data:
            return


async def _forward_stdin(session: ExecSession, fd: int) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(STDIN_QUEUE)
    threading.Thread(target=_read_stdin, args=(fd, loop, queue), daemon=True).start()
    while data := await queue.get():
        await session.send_stdin(data)
    await session.close_stdin()


async def run_exec(session: Session, args: argparse.Namespace) -> int:
    if not args.pod:
        raise CliError("POD is required for exec; see 'orchctl exec --help'")
    command = list(args.command)
    if not command:
        raise CliError("you must specify at least one command for the container")
    name = pod_name(args.pod)
    tty = args.tty
    stdin_fd = sys.stdin.fileno() if args.stdin else -1
    if tty and not (args.stdin and os.isatty(stdin_fd)):
        report(NO_TTY)
        tty = False
    client = await session.client()
    namespace = session.namespace
    try:
        pod = await get_pod(client, namespace, name)
    except PodNotFound:
        return 1
    phase = pod.status.phase
    if phase in ("Succeeded", "Failed"):
        raise CliError(f"cannot exec into a container in a completed pod; current phase is {phase}")
    container = pick_container(pod, args.container)
    rows, cols = terminal_size(sys.stdout.fileno()) if tty else (0, 0)
    exec_session = await pod_exec(
        client,
        namespace,
        name,
        command,
        container=container,
        stdin=args.stdin,
        tty=tty,
        rows=rows,
        cols=cols,
    )
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    resizing = False
    try:
        with raw_terminal(stdin_fd) if tty else contextlib.nullcontext():
            if tty:

                def on_resize() -> None:
                    r, c = terminal_size(sys.stdout.fileno())
                    if r and c:
                        tasks.append(loop.create_task(exec_session.resize(r, c)))

                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signal.SIGWINCH, on_resize)
                    resizing = True
            if args.stdin:
                tasks.append(loop.create_task(_forward_stdin(exec_session, stdin_fd)))
            out, err = sys.stdout.buffer, sys.stderr.buffer
            async for stream, data in exec_session.output():
                target = err if stream == "stderr" else out
                target.write(data)
                target.flush()
    except UnavailableError:
        raise
    except ApiError as exc:
        report(stream_error(exc))
        return 1
    finally:
        if resizing:
            loop.remove_signal_handler(signal.SIGWINCH)
        for task in tasks:
            task.cancel()
        await exec_session.close()
    code = exec_session.exit_code or 0
    if code != 0:
        report(f"command terminated with exit code {code}")
    return code
