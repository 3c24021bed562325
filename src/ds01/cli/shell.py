"""Shells and commands in a container, over a WebSocket on api.sock.

The daemon opens a Docker exec as the caller's uid:gid and relays bytes. For a shell on a
terminal this side puts the terminal in raw mode, forwards keystrokes and window-size changes;
for a command (`ds01 container exec`) or a shell fed from a pipe or file there is no tty: input
is forwarded until its end, and output arrives framed (one byte: 1 stdout, 2 stderr) and goes
to our stdout and stderr. Either way the exit status comes back. Users never touch the Docker
socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlencode

import typer

from ds01.cli.context import globals_of
from ds01.errors import DaemonUnavailable

# The CLI's exit status when the daemon could not tell the command's (as a shell's 255).
UNKNOWN_EXIT = 255


def open_shell(ctx: typer.Context, name: str) -> int:
    """A shell: on a tty when our stdin is a terminal, else fed from stdin without one."""
    paths = globals_of(ctx).paths()
    interactive = os.isatty(sys.stdin.fileno())
    if interactive:
        cols, rows = shutil.get_terminal_size()
        query = {"rows": rows, "cols": cols}
    else:
        query = {"tty": 0}
    return asyncio.run(_session(str(paths.api_socket), name, "shell", query, tty_mode=interactive))


def run_command(ctx: typer.Context, name: str, command: list[str]) -> int:
    """One command without a tty; our stdin is forwarded unless it is a terminal."""
    paths = globals_of(ctx).paths()
    query = [("cmd", arg) for arg in command]
    return asyncio.run(_session(str(paths.api_socket), name, "exec", query, tty_mode=False))


async def _session(
    socket_path: str,
    name: str,
    endpoint: str,
    query: dict[str, Any] | list[tuple[str, str]],
    *,
    tty_mode: bool,
) -> int:
    import aiohttp

    from ds01.client import container_path
    from ds01.errors import error_from_body

    stdin_fd = sys.stdin.fileno()
    connector = aiohttp.UnixConnector(path=socket_path)
    exit_code: int | None = None
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            url = f"http://ds01d{container_path(name, endpoint)}?{urlencode(query)}"
            try:
                ws = await http.ws_connect(url, heartbeat=30, max_msg_size=0)
            except aiohttp.WSServerHandshakeError as e:
                # The daemon refused before upgrading: fetch the error body the usual way.
                async with http.get(url) as r:
                    raise error_from_body(await r.json()) from e
            loop = asyncio.get_running_loop()
            saved = termios.tcgetattr(stdin_fd) if tty_mode else None
            pending: set[asyncio.Task[None]] = set()

            def spawn(coro: Coroutine[Any, Any, None]) -> None:
                # Keep a reference until done: the loop holds tasks only weakly.
                task = loop.create_task(coro)
                pending.add(task)
                task.add_done_callback(pending.discard)

            def forward(data: bytes) -> None:
                spawn(ws.send_bytes(data) if data else ws.send_str(json.dumps({"eof": True})))

            reading = False
            try:
                if tty_mode:
                    tty.setraw(stdin_fd)

                    def on_input() -> None:
                        data = os.read(stdin_fd, 4096)
                        if not data:
                            loop.remove_reader(stdin_fd)
                        forward(data)

                    def on_resize() -> None:
                        c, r = shutil.get_terminal_size()
                        spawn(ws.send_str(json.dumps({"resize": [r, c]})))

                    loop.add_reader(stdin_fd, on_input)
                    reading = True
                    loop.add_signal_handler(signal.SIGWINCH, on_resize)
                elif os.isatty(stdin_fd):
                    forward(b"")  # a command's input is never the terminal: EOF at once
                else:
                    # A pipe or a regular file (which the event loop cannot watch): read in a
                    # daemon thread, which never holds up our exit.
                    def pump() -> None:
                        while True:
                            try:
                                data = os.read(stdin_fd, 65536)
                            except OSError:
                                data = b""
                            loop.call_soon_threadsafe(forward, data)
                            if not data:
                                return

                    threading.Thread(target=pump, name="stdin", daemon=True).start()
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        if tty_mode:
                            os.write(sys.stdout.fileno(), msg.data)
                        elif msg.data:
                            out = sys.stderr if msg.data[0] == 2 else sys.stdout
                            _write_all(out.fileno(), msg.data[1:])
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if "exit" in data:
                            exit_code = data["exit"]
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                        break
            finally:
                if reading:
                    with contextlib.suppress(Exception):
                        loop.remove_reader(stdin_fd)
                if saved is not None:
                    termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
    except aiohttp.ClientConnectionError as e:
        raise DaemonUnavailable(
            f"cannot reach ds01d at {socket_path}",
            fix="Ask an admin to start it (systemctl start ds01d), or check --run-dir.",
        ) from e
    if not isinstance(exit_code, int):
        sys.stderr.write(
            f"ds01: the exit status of the {'shell' if endpoint == 'shell' else 'command'} in "
            f"'{name}' is unknown (the connection ended before it was told, or it still runs)\n"
        )
        return UNKNOWN_EXIT
    return exit_code


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return  # our reader went away (| head): drop the rest
        view = view[n:]
