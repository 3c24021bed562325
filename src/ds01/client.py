"""Typed client for the ds01d API over its Unix socket. Used by the CLI and the tests.

Requests answered with one JSON body go over kept-alive connections of ds01/unixhttp.py (a
tenth of httpx's CPU per request, which matters when eight clients share two cores with
ds01d); the two streamed answers (a deploy's progress lines, a container's logs) are read with
httpx, imported only then.

Errors from the daemon come back as the same ds01 error types the daemon raised, so the CLI
renders them through its one error path. Transport failures (a connection cut, a refused or
slow daemon) become DaemonUnavailable in words, never an HTTP library's text; a stream that
carried an error line before it broke raises that error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote, urlencode

from pydantic import BaseModel

from ds01.api.schemas import (
    AccessEntryOut,
    AccessOut,
    AllocateIn,
    AllocationOut,
    ContainerOut,
    DeployIn,
    EventOut,
    ExemptionOut,
    GrantOut,
    HealthOut,
    HostProcessOut,
    KeepAliveIn,
    OrphanOut,
    QueueEntryOut,
    QueueExplainOut,
    QueueOut,
    QuotaOut,
    ReservationOut,
    StatusOut,
    UsageReportOut,
    WhoAmIOut,
)
from ds01.errors import (
    DaemonUnavailable,
    Ds01Error,
    UsageError,
    deploy_cut_short,
    deploy_without_result,
    error_from_body,
)
from ds01.notices import HEADER, decode
from ds01.paths import Paths
from ds01.unixhttp import ConnectFailed, Pool

if TYPE_CHECKING:
    import httpx

Failure = Literal["connect", "timeout", "closed"]

_M = TypeVar("_M", bound=BaseModel)


def container_path(name: str, *rest: str) -> str:
    """/v1/containers/NAME[/…] with NAME as one path segment: a name holding '/', '..', '?',
    '%' or a control character reaches ds01d as typed (which says there is no such container),
    never as another endpoint or an invalid URL."""
    if not name:
        raise UsageError(
            "the container name is empty", fix="Give a name from 'ds01 container list'."
        )
    return "/".join(("/v1/containers", quote(name, safe=""), *rest))


class Client:
    def __init__(
        self,
        socket_path: Path | str,
        timeout: float = 30.0,
        notices: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        """`notices`: ask ds01d for the caller's banner notices (notices.py) and pass those
        that come to it; without it they are left for the user's next command."""
        self.socket_path = Path(socket_path)
        self._notices = notices
        self._timeout = timeout
        self._pool = Pool(str(self.socket_path), timeout)
        self._streaming: httpx.Client | None = None

    def _streams(self) -> httpx.Client:
        """The httpx client for the streamed answers, made on first use."""
        if self._streaming is None:
            import httpx

            notices = self._notices is not None
            self._streaming = httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self.socket_path)),
                base_url="http://ds01d",
                timeout=self._timeout,
                headers={HEADER: "1"} if notices else None,
                event_hooks={"response": [self._take_notices]} if notices else None,
            )
        return self._streaming

    def _take_notices(self, r: httpx.Response) -> None:
        got = decode(r.headers.get(HEADER))
        if got and self._notices is not None:
            self._notices(got)

    @classmethod
    def from_paths(
        cls,
        paths: Paths | None = None,
        notices: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> Client:
        return cls((paths or Paths.resolve()).api_socket, notices=notices)

    def close(self) -> None:
        self._pool.close()
        if self._streaming is not None:
            self._streaming.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        target = f"{path}?{_query(params)}" if params else path
        body = None if json is None else _encode(json)
        try:
            reply = self._pool.request(method, target, body, self._notices is not None)
        except (OSError, ValueError) as e:
            failure: Failure = (
                "connect"
                if isinstance(e, ConnectFailed)
                else "timeout"
                if isinstance(e, TimeoutError)
                else "closed"
            )
            raise self._unreachable(failure) from e
        if reply.notices and self._notices is not None:
            self._notices(reply.notices)
        data = _decoded(reply.status, reply.body)
        if reply.status >= 400:
            raise error_from_body(data if isinstance(data, dict) else {})
        return data

    def _error_of(self, r: httpx.Response) -> Ds01Error:
        """The error of a streamed request answered >= 400 (its body is read here)."""
        import httpx

        try:
            body = r.read()
        except httpx.TransportError as e:
            return self._unreachable(_httpx_failure(e))
        data = _decoded(r.status_code, body)
        return error_from_body(data if isinstance(data, dict) else {})

    def _unreachable(self, failure: Failure) -> DaemonUnavailable:
        if failure == "connect":
            return DaemonUnavailable(
                f"cannot reach ds01d at {self.socket_path}",
                why="The daemon is not running, or DS01_RUN_DIR points elsewhere.",
                fix="Ask an admin to start it (systemctl start ds01d), or check --run-dir.",
            )
        if failure == "timeout":
            return DaemonUnavailable(
                f"ds01d at {self.socket_path} did not answer in time",
                why="It is very busy or stuck.",
                fix="Try again; if it persists, ask an admin to check 'journalctl -u ds01d'.",
            )
        return DaemonUnavailable(
            f"ds01d at {self.socket_path} closed the connection before it answered",
            why="It was restarting, or it refused the connection (for example, too many "
            "connections from your user at once).",
            fix="Try again; if it persists, ask an admin to check 'journalctl -u ds01d'.",
        )

    def _get(self, path: str, model: type[_M], **params: Any) -> _M:
        return model.model_validate(self._request("GET", path, params=_clean(params)))

    def _get_list(self, path: str, model: type[_M], **params: Any) -> list[_M]:
        return [model.model_validate(x) for x in self._request("GET", path, params=_clean(params))]

    # ---- endpoints -------------------------------------------------------------------

    def health(self) -> HealthOut:
        return self._get("/v1/health", HealthOut)

    def whoami(self) -> WhoAmIOut:
        return self._get("/v1/whoami", WhoAmIOut)

    def gpu_status(self) -> StatusOut:
        return self._get("/v1/gpu/status", StatusOut)

    def allocate(self, req: AllocateIn) -> AllocationOut:
        data = self._request("POST", "/v1/allocations", json=req.model_dump(exclude_none=True))
        return AllocationOut.model_validate(data)

    def allocations(self, all_users: bool = False, gpus: bool = False) -> list[AllocationOut]:
        """Live allocations; `gpus`: only those holding units."""
        return self._get_list(
            "/v1/allocations",
            AllocationOut,
            all="1" if all_users else None,
            gpus="1" if gpus else None,
        )

    def allocation(self, alloc_id: int) -> AllocationOut:
        return self._get(f"/v1/allocations/{alloc_id}", AllocationOut)

    def release(self, alloc_id: int, reason: str = "user_release") -> AllocationOut:
        data = self._request("POST", f"/v1/allocations/{alloc_id}/release", json={"reason": reason})
        return AllocationOut.model_validate(data)

    def quota(self) -> QuotaOut:
        return self._get("/v1/quota", QuotaOut)

    def events(
        self,
        user: str | None = None,
        since: float | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[EventOut]:
        return self._get_list(
            "/v1/events", EventOut, user=user, since=since, kind=kind, limit=limit
        )

    def usage_report(
        self,
        start: float,
        end: float,
        by: str = "user",
        user: str | None = None,
        series: bool = False,
    ) -> UsageReportOut:
        return self._get(
            "/v1/reports/usage",
            UsageReportOut,
            **{"from": start, "to": end},
            by=by,
            user=user,
            series=1 if series else None,
        )

    def drain(self, target: str, reason: str, undrain: bool = False) -> dict[str, Any]:
        op = "undrain" if undrain else "drain"
        data = self._request("POST", f"/v1/admin/{op}", json={"target": target, "reason": reason})
        assert isinstance(data, dict)
        return data

    # ---- containers ------------------------------------------------------------------

    def deploy(
        self, req: DeployIn, on_progress: Callable[[str], None] | None = None
    ) -> ContainerOut:
        """Deploy and follow the daemon's progress lines until the result or an error."""
        out = self.deploy_or_queue(req, on_progress)
        if not isinstance(out, ContainerOut):
            raise deploy_without_result()
        return out

    def deploy_or_queue(
        self, req: DeployIn, on_progress: Callable[[str], None] | None = None
    ) -> ContainerOut | QueueEntryOut:
        """Deploy (with req.queue: or queue) and follow the daemon's progress lines until the
        result, a queue entry or an error."""
        import httpx

        result: dict[str, Any] | None = None
        queued: dict[str, Any] | None = None
        try:
            with self._streams().stream(
                "POST", "/v1/containers", json=req.model_dump(exclude_none=True), timeout=None
            ) as r:
                if r.status_code >= 400:
                    raise self._error_of(r)
                for line in r.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue  # not a line of ds01d's; the result or error line decides
                    if not isinstance(msg, dict):
                        continue
                    if "progress" in msg and on_progress is not None:
                        on_progress(str(msg["progress"]))
                    elif "error" in msg:
                        raise error_from_body(msg)
                    elif "container" in msg:
                        result = msg["container"]
                    elif "queued" in msg:
                        queued = msg["queued"]
        except httpx.TransportError as e:
            if isinstance(e, httpx.ConnectError):
                raise self._unreachable("connect") from e  # it never started
            if result is None and queued is None:
                raise deploy_cut_short() from e
        if queued is not None:
            return QueueEntryOut.model_validate(queued)
        if result is None:
            raise deploy_without_result()
        return ContainerOut.model_validate(result)

    def containers(self, all_users: bool = False) -> list[ContainerOut]:
        return self._get_list("/v1/containers", ContainerOut, all="1" if all_users else None)

    def container(self, name: str) -> ContainerOut:
        return self._get(container_path(name), ContainerOut)

    def top(self, events: int) -> dict[str, Any]:
        """GET /v1/top (TopOut) as JSON: cli/topview.py reads it as the quick path has it."""
        data = self._request("GET", "/v1/top", params={"events": events})
        assert isinstance(data, dict)
        return data

    def container_stats(self, name: str | None = None, all_users: bool = False) -> Any:
        """GET /v1/container-stats (a list of ContainerStatsOut) or, with a name, one
        (ContainerStatsOut), as JSON: cli/statsview.py draws it as the quick path has it."""
        if name is None:
            return self._request(
                "GET", "/v1/container-stats", params=_clean({"all": "1" if all_users else None})
            )
        validated = container_path(name).removeprefix("/v1/containers/")
        return self._request("GET", f"/v1/container-stats/{validated}")

    def keep_alive(self, name: str, duration: str) -> ContainerOut:
        body = KeepAliveIn(duration=duration).model_dump()
        data = self._request("POST", container_path(name, "keep-alive"), json=body)
        return ContainerOut.model_validate(data)

    def container_op(self, name: str, op: str) -> dict[str, Any]:
        data = self._request("POST", container_path(name, op))
        assert isinstance(data, dict)
        return data

    def logs(self, name: str, follow: bool = False, tail: int | None = None) -> Iterator[bytes]:
        import httpx

        params = _clean({"follow": "1" if follow else None, "tail": tail})
        try:
            with self._streams().stream(
                "GET", container_path(name, "logs"), params=params, timeout=None
            ) as r:
                if r.status_code >= 400:
                    raise self._error_of(r)
                yield from r.iter_bytes()
        except httpx.TransportError as e:
            raise self._unreachable(_httpx_failure(e)) from e

    def queue(self, all_users: bool = False) -> QueueOut:
        return self._get("/v1/queue", QueueOut, all="1" if all_users else None)

    def queue_cancel(self, entry_id: int) -> QueueEntryOut:
        data = self._request("POST", f"/v1/queue/{entry_id}/cancel")
        return QueueEntryOut.model_validate(data)

    def queue_explain(self, entry_id: int) -> QueueExplainOut:
        return self._get(f"/v1/queue/{entry_id}/explain", QueueExplainOut)

    def orphans(self) -> list[OrphanOut]:
        return self._get_list("/v1/admin/orphans", OrphanOut)

    def openapi(self) -> dict[str, Any]:
        data = self._request("GET", "/v1/openapi.json")
        assert isinstance(data, dict)
        return data

    # ---- bare-metal grants and host processes -----------------------------------------

    def grant(
        self, user: str, reason: str, duration: str | None = None, permanent: bool = False
    ) -> GrantOut:
        # A plain dict, not GrantIn: the daemon validates and answers with a ds01 error.
        body = {"user": user, "duration": duration, "permanent": permanent, "reason": reason}
        data = self._request("POST", "/v1/admin/grants", json=_clean(body))
        return GrantOut.model_validate(data)

    def exempt(
        self,
        user: str,
        countdown: str,
        reason: str,
        until: str | None = None,
        duration: str | None = None,
    ) -> ExemptionOut:
        # A plain dict, not ExemptIn: the daemon validates and answers with a ds01 error.
        body = {"user": user, "countdown": countdown, "until": until, "duration": duration}
        data = self._request(
            "POST", "/v1/admin/exemptions", json={**_clean(body), "reason": reason}
        )
        return ExemptionOut.model_validate(data)

    def unexempt(self, user: str, countdown: str, reason: str = "ended") -> ExemptionOut:
        body = {"user": user, "countdown": countdown, "reason": reason}
        data = self._request("POST", "/v1/admin/exemptions/end", json=body)
        return ExemptionOut.model_validate(data)

    def exemptions(self) -> list[ExemptionOut]:
        return self._get_list("/v1/admin/exemptions", ExemptionOut)

    def reserve(
        self,
        units: list[str],
        start: str,
        end: str,
        party: str,
        reason: str,
        grace: str | None = None,
    ) -> ReservationOut:
        body = {"units": units, "start": start, "end": end, "party": party, "reason": reason}
        data = self._request(
            "POST", "/v1/admin/reservations", json={**body, **_clean({"grace": grace})}
        )
        return ReservationOut.model_validate(data)

    def reservations(self, ended: bool = False) -> list[ReservationOut]:
        return self._get_list("/v1/admin/reservations", ReservationOut, all="1" if ended else None)

    def unreserve(self, rid: int, reason: str) -> ReservationOut:
        data = self._request(
            "POST", f"/v1/admin/reservations/{rid}/cancel", json={"reason": reason}
        )
        return ReservationOut.model_validate(data)

    def revoke(self, user: str, reason: str = "revoked") -> GrantOut:
        data = self._request(
            "POST", "/v1/admin/grants/revoke", json={"user": user, "reason": reason}
        )
        return GrantOut.model_validate(data)

    def grants(self) -> list[AccessEntryOut]:
        return self._get_list("/v1/admin/grants", AccessEntryOut)

    def access(self) -> AccessOut:
        return self._get("/v1/access", AccessOut)

    def host_processes(self) -> list[HostProcessOut]:
        return self._get_list("/v1/admin/host-processes", HostProcessOut)


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _query(params: dict[str, Any]) -> str:
    """The query string, values written as httpx writes them (true/false for booleans)."""
    return urlencode(
        {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in params.items()}
    )


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _decoded(status: int, body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise DaemonUnavailable(
            f"ds01d answered {status} with a body that is not JSON",
            fix="Check that --run-dir points at ds01d's socket.",
        ) from None


def _httpx_failure(e: httpx.TransportError) -> Failure:
    import httpx

    if isinstance(e, httpx.ConnectError):
        return "connect"
    if isinstance(e, httpx.TimeoutException):
        return "timeout"
    return "closed"
