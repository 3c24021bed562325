"""The usage report endpoint (`ds01 report usage`; services/usagereport.py): yours, or anyone's
for admins."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from ds01.api.convert import iso
from ds01.api.http import caller_of, deps_of, off_loop, ok
from ds01.api.schemas import UsageReportOut
from ds01.errors import UsageError
from ds01.services.usagereport import UsageReport, UsageReports


def _time(q: dict[str, str], name: str) -> float:
    if name not in q:
        raise UsageError(f"{name} is required (a unix timestamp)")
    try:
        return float(q[name])
    except ValueError:
        raise UsageError(f"{name} must be a unix timestamp, got {q[name][:40]!r}") from None


def report_out(r: UsageReport) -> UsageReportOut:
    return UsageReportOut.model_validate(
        {
            "start": iso(r.start),
            "end": iso(r.end),
            "by": r.by,
            "scope": r.scope,
            "grid_intensity_g_per_kwh": r.grid_intensity_g_per_kwh,
            "rows": [asdict(f) for f in r.rows],
            "total": asdict(r.total),
            "machine": None if r.machine is None else asdict(r.machine),
            "series": [{"hour": iso(h), "key": k, "gpu_hours": v} for h, k, v in r.series],
        }
    )


async def usage_report(request: web.Request) -> web.Response:
    q = dict(request.query)
    allocations = deps_of(request).allocations
    reports = UsageReports(allocations.db, lambda: allocations.config)
    report = await off_loop(
        reports.usage,
        caller_of(request),
        start=_time(q, "from"),
        end=_time(q, "to"),
        by=q.get("by", "user"),
        user=q.get("user"),
        series=q.get("series") in ("1", "true"),
    )
    return ok(report_out(report))
