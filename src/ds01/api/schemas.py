"""Request and response bodies of the API, shared by server and client. Imports only pydantic
and ds01.model, so the client stays light."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ds01.model.gpueq import GpuEq


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllocateIn(_In):
    """Exactly one of gpus, mig, gpueq or cpu_only."""

    gpus: int | None = Field(default=None, ge=1, le=64, description="Whole GPUs")
    mig: list[str] | None = Field(default=None, min_length=1, description="MIG profiles")
    gpueq: str | None = Field(default=None, description="Any units worth at least this")
    cpu_only: bool = False
    container: str | None = Field(default=None, description="Container the GPUs are for")

    @field_validator("gpueq")
    @classmethod
    def _gpueq(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            g = GpuEq.parse(v)
        except (ValueError, ZeroDivisionError) as e:
            raise ValueError(f"expected a number like 0.5 or 3/7, got {v!r}") from e
        if not g:
            raise ValueError("must be greater than 0")
        return g.as_text()

    @model_validator(mode="after")
    def _one_kind(self) -> AllocateIn:
        chosen = [
            k
            for k, v in (
                ("gpus", self.gpus),
                ("mig", self.mig),
                ("gpueq", self.gpueq),
                ("cpu_only", self.cpu_only or None),
            )
            if v is not None
        ]
        if len(chosen) != 1:
            raise ValueError("give exactly one of gpus, mig, gpueq or cpu_only")
        return self


class ReleaseIn(_In):
    reason: str = Field(default="user_release", min_length=1, max_length=500)


class DrainIn(_In):
    target: str = Field(min_length=1, description="Unit UUID, GPU UUID or GPU index")
    reason: str = Field(min_length=1, max_length=500)


class UnitOut(BaseModel):
    uuid: str
    kind: str
    gpu_uuid: str
    gpu_index: int
    model: str
    profile: str | None
    memory_total_mib: int | None
    gpueq: float
    gpueq_exact: str
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class AllocationOut(BaseModel):
    id: int
    user: str
    group: str | None
    container: str | None
    state: str
    units: list[UnitOut]
    gpueq: float
    gpueq_exact: str
    created_at: str
    expires_at: str | None = None
    hold_until: str | None = None
    released_at: str | None = None
    release_reason: str | None = None


class UnitStatusOut(UnitOut):
    drained: bool = False
    drain_reason: str | None = None
    user: str | None = Field(default=None, description="Holder; null when free or hidden")
    allocation_id: int | None = None
    state: str | None = Field(default=None, description="Allocation state; null when free")
    container: str | None = None
    hold_until: str | None = None
    utilization_pct: float | None = Field(
        default=None, description="GPU utilization; null when unknown (MIG devices)"
    )
    memory_used_mib: int | None = None


class StatusOut(BaseModel):
    backend: str
    sampled_at: str | None
    units: list[UnitStatusOut]
    free_gpueq: float
    total_gpueq: float
    warnings: list[str] = []


class LimitValue(BaseModel):
    value: Any
    source: str


class QuotaOut(BaseModel):
    user: str
    group: str | None
    limits: dict[str, LimitValue]
    allocations: list[AllocationOut]
    used_gpueq: float
    used_gpueq_exact: str
    max_gpueq: float
    remaining_gpueq: float
    containers: int
    max_containers: int
    exempt: bool


class EventOut(BaseModel):
    id: int
    ts: str
    kind: str
    action: str
    actor: str | None
    user: str | None
    allocation_id: int | None
    reason: str
    message: str
    details: dict[str, Any]


class WhoAmIOut(BaseModel):
    user: str
    uid: int
    groups: list[str]
    admin: bool


class HealthOut(BaseModel):
    status: str
    version: str
    backend: str
    docker: str


class ErrorBody(BaseModel):
    kind: str
    what: str
    why: str | None = None
    fix: str | None = None
    reason: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


class DeployIn(_In):
    name: str = Field(min_length=1, max_length=63)
    image: str = Field(min_length=1, max_length=512)
    gpus: int | None = Field(default=None, ge=1, le=64)
    mig: list[str] | None = Field(default=None, min_length=1)
    gpueq: str | None = None
    cpu_only: bool = False
    workspace: str | None = None
    data: list[str] = []
    env: dict[str, str] = {}
    command: list[str] | None = None
    interactive: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> DeployIn:
        chosen = [
            k
            for k, v in (
                ("gpus", self.gpus),
                ("mig", self.mig),
                ("gpueq", self.gpueq),
                ("cpu_only", self.cpu_only or None),
            )
            if v is not None
        ]
        if len(chosen) > 1:
            raise ValueError("give at most one of gpus, mig, gpueq or cpu_only")
        return self


class ContainerAllocationOut(BaseModel):
    id: int
    state: str
    hold_until: str | None = None
    expires_at: str | None = None
    gpueq: float
    gpueq_exact: str


class ContainerOut(BaseModel):
    name: str = Field(description="Your short name for it")
    docker_name: str
    id: str
    owner: str | None
    image: str
    state: str = Field(description="created | running | paused | restarting | exited | dead")
    created: str | None
    started_at: str | None
    finished_at: str | None
    gpus: list[UnitOut] = Field(description="Units it is pinned to (from its allocation)")
    gpu_device_ids: list[str] = Field(description="Device IDs in the container's config")
    allocation: ContainerAllocationOut | None
    note: str | None = None


class OrphanOut(BaseModel):
    container_id: str
    docker_name: str
    owner: str | None
    gpu_device_ids: list[str]
    problem: str
