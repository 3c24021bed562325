"""The webhook channel: one POST of {"text": ...} per notice to an incoming webhook (Slack,
Mattermost, Rocket.Chat and Teams' incoming webhooks all take this body).

Owns the request: JSON body, a timeout on every network step, no redirects followed (a 3xx is
a failure: a webhook that moved must be configured again, never followed to wherever it
points), and the outcome as text that never contains the URL (its path is the secret).
Must not retry (a notice delivered twice is worse than a failure in the audit log) and must not
run on an enforcing thread: the notifier's outbox calls it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx


class WebhookError(Exception):
    """The webhook did not take the notice (why, without the URL)."""


def url_of(url: str | None, url_file: Path | None) -> str:
    """The URL, from the config or read now from its root-only file (a rotated secret needs no
    reload)."""
    if url:
        return url
    if url_file is None:
        raise WebhookError("no webhook URL is configured (notify.webhook.url or url_file)")
    try:
        text = url_file.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise WebhookError(f"cannot read notify.webhook.url_file: {e.strerror or e}") from None
    if urlsplit(text).scheme not in ("http", "https"):
        raise WebhookError("notify.webhook.url_file does not hold an http(s) URL")
    return text


def where(url: str) -> str:
    """What the audit log may say about the webhook: scheme and host, never the path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def post(url: str, text: str, timeout_s: float) -> int:
    """POST the notice; the HTTP status when it is 2xx, WebhookError otherwise."""
    try:
        # Streamed, and closed once the status is in: the answer's body is never read, so a
        # server that trickles one cannot hold the channel.
        with httpx.stream(
            "POST",
            url,
            json={"text": text},
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"User-Agent": "ds01d"},
        ) as r:
            pass
    except httpx.TimeoutException:
        raise WebhookError(f"no answer from {where(url)} within {timeout_s:g} s") from None
    except httpx.HTTPError as e:
        raise WebhookError(f"{where(url)}: {type(e).__name__}: {e}") from None
    if not 200 <= r.status_code < 300:
        raise WebhookError(f"{where(url)} answered {r.status_code} {r.reason_phrase}")
    return r.status_code


def text_of(user: str, message: str) -> str:
    """The posted text: a shared channel must say whom the notice is for."""
    return f"ds01 → {user}:\n{message.strip()}"
