"""An interactive shell in a container, over a WebSocket on api.sock.

The daemon opens a Docker exec as the caller's uid:gid and relays bytes; this side puts the
terminal in raw mode, forwards keystrokes and window-size changes, and returns the shell's exit
status. Users never touch the Docker socket.
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
import tty
from collections.abc import Coroutine
from typing import Any

import typer

from ds01.cli.context import globals_of
from ds01.errors import DaemonUnavailable


def open_shell(ctx: typer.Context, name: str) -> int:
    paths = globals_of(ctx).paths()
    return asyncio.run(_session(str(paths.api_socket), name))


async def _session(socket_path: str, name: str) -> int:
    import aiohttp

    from ds01.client import container_path, error_from_body

    stdin_fd = sys.stdin.fileno()
    interactive = os.isatty(stdin_fd)
    connector = aiohttp.UnixConnector(path=socket_path)
    exit_code = 0
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            cols, rows = shutil.get_terminal_size()
            url = f"http://ds01d{container_path(name, 'shell')}?rows={rows}&cols={cols}"
            try:
                ws = await http.ws_connect(url, heartbeat=30)
            except aiohttp.WSServerHandshakeError as e:
                # The daemon refused before upgrading: fetch the error body the usual way.
                async with http.get(url) as r:
                    raise error_from_body(await r.json()) from e
            loop = asyncio.get_running_loop()
            saved = termios.tcgetattr(stdin_fd) if interactive else None
            try:
                if interactive:
                    tty.setraw(stdin_fd)
                pending: set[asyncio.Task[None]] = set()

                def spawn(coro: Coroutine[Any, Any, None]) -> None:
                    # Keep a reference until done: the loop holds tasks only weakly.
                    task = loop.create_task(coro)
                    pending.add(task)
                    task.add_done_callback(pending.discard)

                def on_input() -> None:
                    data = os.read(stdin_fd, 4096)
                    if data:
                        spawn(ws.send_bytes(data))
                    else:
                        loop.remove_reader(stdin_fd)
                        spawn(ws.send_str(json.dumps({"eof": True})))

                def on_resize() -> None:
                    c, r = shutil.get_terminal_size()
                    spawn(ws.send_str(json.dumps({"resize": [r, c]})))

                loop.add_reader(stdin_fd, on_input)
                if interactive:
                    loop.add_signal_handler(signal.SIGWINCH, on_resize)
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        os.write(sys.stdout.fileno(), msg.data)
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if "exit" in data:
                            exit_code = int(data["exit"] or 0)
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                        break
            finally:
                with contextlib.suppress(Exception):
                    loop.remove_reader(stdin_fd)
                if saved is not None:
                    termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
    except aiohttp.ClientConnectionError as e:
        raise DaemonUnavailable(
            f"cannot reach ds01d at {socket_path}",
            fix="Ask an admin to start it (systemctl start ds01d), or check --run-dir.",
        ) from e
    return exit_code
