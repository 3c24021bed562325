"""The user's own Docker access, as the `ds01` CLI uses it for images (`ds01 image …`,
`ds01 project launch`): the Docker SDK on the gate socket, in the user's process — so the
gate judges and records every build, pull and removal exactly as for the user's docker CLI
(owner records, the classic builder, the user's limits), and ds01d's root engine access is
never used for them.

Translates the SDK's errors at this boundary: a gate refusal (403) or engine error becomes a
Ds01Error carrying the gate's own words; an unreachable socket RuntimeUnavailable.
Must not decide what to build or which image is whose: the gate does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import requests

from ds01.errors import Ds01Error, RuntimeUnavailable
from ds01.runtime.down import cause_in_words

BUILD_SILENCE_S = 3600  # seconds a build may print nothing (a long compile) before the CLI gives up


class BuildFailed(Ds01Error):
    kind = "build_failed"


class UserDocker:
    def __init__(self, host: str, fix_unreachable: str) -> None:
        self.host = host
        self.fix_unreachable = fix_unreachable
        self._api: docker.APIClient | None = None

    @property
    def api(self) -> docker.APIClient:
        if self._api is None:
            with self._errors("reach Docker"):
                self._api = docker.APIClient(base_url=self.host, version="auto", timeout=300)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except docker.errors.APIError as e:
            # A gate refusal says what / why / what to do, one line each (gate/refusal.py).
            what, *why = gate_words(e).splitlines() or [""]
            raise Ds01Error(
                f"cannot {action}: {what}",
                why=why[0] if why else None,
                fix=" ".join(why[1:]) or None,
            ) from e
        except docker.errors.DockerException as e:
            if isinstance(e.__cause__, PermissionError) or "Permission denied" in str(e):
                raise RuntimeUnavailable(
                    f"cannot {action}: you may not use Docker on this server ({self.host})",
                    why="Only members of the lab's ds01 group may reach the Docker gate.",
                    fix="Ask an admin to add you (ds01 doctor checks the setup).",
                ) from e
            raise RuntimeUnavailable(
                f"cannot {action}: Docker is not reachable at {self.host}",
                why=cause_in_words(e, self.host),
                fix=self.fix_unreachable,
            ) from e
        except requests.RequestException as e:
            raise RuntimeUnavailable(
                f"cannot {action}: Docker is not reachable at {self.host}",
                why=cause_in_words(e, self.host),
                fix=self.fix_unreachable,
            ) from e

    def image(self, ref: str) -> dict[str, Any] | None:
        """The image's inspect data; None when there is no such image."""
        with self._errors(f"look up image {ref!r}"):
            try:
                data: dict[str, Any] = self.api.inspect_image(ref)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                return None
            return data

    def pull(self, ref: str, on_line: Callable[[str], None]) -> str | None:
        """Pull `ref`, telling on_line each layer's steps (not the byte counts); None when
        done, else why it could not be pulled (the engine's words)."""
        try:
            for line in self.api.pull(ref, stream=True, decode=True):
                if not isinstance(line, dict):
                    continue
                if line.get("error"):
                    return str(line["error"])
                if line.get("status") and not line.get("progressDetail"):
                    layer = f"{line['id']}: " if line.get("id") else ""
                    on_line(f"{layer}{line['status']}\n")
        except docker.errors.APIError as e:
            return gate_words(e)
        except (docker.errors.DockerException, requests.RequestException) as e:
            return cause_in_words(e, self.host)
        return None

    def build(
        self,
        context: str,
        dockerfile: str,
        tag: str,
        labels: dict[str, str],
        on_line: Callable[[str], None],
    ) -> str:
        """Build with the classic builder (the gate refuses BuildKit), streaming each line of
        progress to on_line; the new image's ID. BuildFailed carries the failing step's words."""
        image_id = ""
        with self._errors(f"build {tag}"):
            stream = self.api.build(
                path=context,
                dockerfile=dockerfile,
                tag=tag,
                labels=labels,
                rm=True,
                forcerm=True,
                decode=True,
                # Between two lines of output: a step may compile for a long time in silence.
                timeout=BUILD_SILENCE_S,
            )
            for item in stream:
                if not isinstance(item, dict):
                    continue
                if item.get("error"):
                    detail = item.get("errorDetail") or {}
                    message = str(detail.get("message") or item["error"]).strip()
                    raise BuildFailed(f"building {tag} failed: {message}")
                if "stream" in item:
                    on_line(str(item["stream"]))
                aux = item.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = str(aux["ID"])
        if not image_id:
            data = self.image(tag)
            image_id = str((data or {}).get("Id", ""))
        return image_id

    def images(self) -> list[dict[str, Any]]:
        """GET /images/json as the gate answers the user: their images and the shared ones."""
        with self._errors("list images"):
            found: list[dict[str, Any]] = self.api.images()
            return found

    def remove(self, ref: str) -> None:
        with self._errors(f"remove image {ref!r}"):
            self.api.remove_image(ref)


def gate_words(e: docker.errors.APIError) -> str:
    """The message of a refusal or engine error, without the SDK's status-code prefix."""
    explanation = e.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or e).strip()
