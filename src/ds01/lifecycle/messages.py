"""What users are told about the idle and runtime countdowns: one function per message, each
saying exactly when ds01 will act and how to prevent it (issue 15, item 2). Pure text."""

from __future__ import annotations

from ds01.lifecycle.countdown import Stop, Warn
from ds01.model.activity import Countdown
from ds01.timetext import clock, span


def _name(container: str | None) -> str:
    return f"'{container}'" if container else "your container"


def _kept(container: str | None, hold_s: int) -> str:
    name = container or "NAME"
    held = (
        f"its GPU is held for you for {span(hold_s)}, then released"
        if hold_s
        else ("its GPU is released")
    )
    return (
        f"The container and its files are kept; {held}. "
        f"Start it again with: ds01 container start {name}"
    )


def warning(
    w: Warn,
    container: str | None,
    units: str,
    hold_s: int,
    now: float,
    demand: tuple[int, float] | None = None,
) -> str:
    """demand: (the configured idle timeout, when a request was last refused for lack of
    GPUs) when the idle timeout is shorter because others are waiting."""
    at = f"{clock(w.deadline, now)} (in {span(w.deadline - now)})"
    if w.countdown is Countdown.IDLE:
        shorter = (
            f" (not {span(demand[0])}: GPU requests were refused for lack of free GPUs at "
            f"{clock(demand[1], now)}, so idle GPUs come back sooner)"
            if demand
            else ""
        )
        return (
            f"Your container {_name(container)} has not used its GPU ({units}) since "
            f"{clock(w.start, now)}. ds01 will stop it at {at}, after {span(w.timeout_s)} "
            f"idle{shorter}.\nTo keep it running, use the GPU: any GPU work resets this "
            "countdown; to keep it for a while without, run: ds01 container keep-alive "
            f"{container or 'NAME'} --for 2h. " + _kept(container, hold_s) + "."
        )
    return (
        f"Your container {_name(container)} reaches its maximum runtime of {span(w.timeout_s)}"
        f" (started {clock(w.start, now)}): ds01 will stop it at {at}.\n"
        f"Save your work before then; stop it yourself with: ds01 container stop "
        f"{container or 'NAME'}. " + _kept(container, hold_s) + "."
    )


def stopped(s: Stop, container: str | None, hold_s: int, now: float) -> str:
    if s.countdown is Countdown.IDLE:
        why = f"its GPU was idle since {clock(s.start, now)} ({span(s.timeout_s)} allowed)"
    else:
        why = f"it reached its maximum runtime of {span(s.timeout_s)}"
    return (
        f"ds01 stopped your container {_name(container)}: {why}. " + _kept(container, hold_s) + "."
    )
