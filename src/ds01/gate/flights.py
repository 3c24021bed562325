"""Shared upstream flights: identical requests that arrive together get one engine answer
(issue 14, item 3 — `docker ps` from many clients at once).

Owns only the sharing rule. What a flight fetches, and how its one answer is narrowed for each
caller, belong to whoever asks (server.py and policy/filters.py for container lists); the key
must name everything the engine's answer depends on, and nothing about the caller may go into
the request a flight sends.

The rule that keeps sharing as fresh as not sharing: a request only ever joins a flight that
has not started yet. A flight starts (and only then sends its request to the engine) after
every request it serves has arrived, so no caller gets an answer older than their own request —
a container created before the request was sent is in the answer. Per key at most one flight
is in the air; requests that arrive meanwhile gather in the next one, which starts when the
first lands, so the engine sees at most one request per key at a time however many clients ask.
A flight belongs to no request: a caller that goes away leaves it to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Flights(Generic[K, T]):
    """`await flights.get(key)`: the result of a `fetch(key)` that started after this call."""

    def __init__(self, fetch: Callable[[K], Awaitable[T]]) -> None:
        self._fetch = fetch
        # Not started, open to join: each caller's own future, so that a caller going away
        # cancels its wait only (a shield per request did the same at twice the cost).
        self._boarding: dict[K, list[asyncio.Future[T]]] = {}
        self._flying: set[K] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.started = 0  # flights sent so far (tests and the benchmark read it)

    async def get(self, key: K) -> T:
        waiters = self._boarding.get(key)
        if waiters is None:
            waiters = self._boarding[key] = []
            if key not in self._flying:
                self._launch(key)
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        return await waiter

    def _launch(self, key: K) -> None:
        # The task starts on a later turn of the event loop: requests read in this turn still
        # board. Boarding closes in _fly, before anything is sent.
        task = asyncio.get_running_loop().create_task(self._fly(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fly(self, key: K) -> None:
        waiters = self._boarding.pop(key)
        self._flying.add(key)
        self.started += 1
        try:
            result = await self._fetch(key)
        except asyncio.CancelledError:
            for waiter in waiters:
                waiter.cancel()
            raise
        except BaseException as exc:  # the waiters get the failure (engine down, timeout)
            for waiter in waiters:
                if not waiter.done():  # done: cancelled, its caller gone
                    waiter.set_exception(exc)
        else:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(result)
        finally:
            self._flying.discard(key)
            if key in self._boarding:
                self._launch(key)

    async def close(self) -> None:
        """Cancel the flights in the air (ds01d stopping); their callers get CancelledError."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for waiters in self._boarding.values():
            for waiter in waiters:
                waiter.cancel()
        self._boarding.clear()
