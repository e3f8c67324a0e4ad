"""The ``[[enrich]]`` entries: what to read from ServiceNow, and how to match it to events.

Two types: ``servicenow-changes`` (change requests that set ``change_id`` on
events) and ``servicenow-incidents`` (incidents linked to deployments by
``change_id``, for Change Failure Rate and Time to Restore). Each reads a file
(``path``, relative to the config file) or the Table API (``instance``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from backfill.model import Model, TimeZoneName

ENV_NAME = r"^$|^[A-Za-z_][A-Za-z0-9_]*$"


class EnrichBase(Model):
    """Keys every ``[[enrich]]`` entry accepts."""

    # Built when a config first uses the type (backfill.config), not when the module is imported.
    model_config = ConfigDict(defer_build=True)

    type: str
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    # A CSV list-view export or the Table API's JSON (one or more pages back to back).
    path: str | None = Field(default=None, min_length=1)
    format: Literal["auto", "csv", "json"] = "auto"
    encoding: str = "utf-8"
    # Read the Table API directly instead: https://<instance>.service-now.com
    instance: str | None = None
    user_env: str = Field(default="", pattern=ENV_NAME)
    password_env: str = Field(default="", pattern=ENV_NAME)
    token_env: str = Field(default="", pattern=ENV_NAME)
    # An encoded query (sysparm_query) that limits what the Table API returns.
    query: str = ""
    # Table API: read only records updated since the earliest planned deployment, less this margin.
    narrow_query: bool = True
    narrow_margin_days: float = Field(default=30.0, ge=0, le=3650)
    page_size: int = Field(default=1000, ge=1, le=10000)
    timeout: float = Field(default=30.0, gt=0, le=600)
    max_rate_limit_wait: float = Field(default=300.0, ge=0, le=3600)
    allow_http: bool = False
    # The zone ServiceNow wrote its dates in (the exporting user's zone); Table API
    # answers without sysparm_display_value are in UTC.
    timezone: TimeZoneName = "UTC"

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        return str(Path(base, value)) if value is not None and base else value

    @field_validator("instance")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (for example https://acme.service-now.com)")
        if value is not None and "@" in value.split("/")[2]:
            raise ValueError("must not hold a user or password; name their variables in user_env and password_env")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _one_place(self) -> EnrichBase:
        if (self.path is None) == (self.instance is None):
            raise ValueError("path: set path (an export file) or instance (the Table API), exactly one")
        if self.token_env and (self.user_env or self.password_env):
            raise ValueError("token_env: set token_env, or user_env and password_env, not both")
        if bool(self.user_env) != bool(self.password_env):
            raise ValueError("user_env: basic auth needs both user_env and password_env")
        return self


class ChangeRequests(EnrichBase):
    """``type = "servicenow-changes"``: set change_id from ServiceNow's change_request table."""

    type: Literal["servicenow-changes"]
    table: str = "change_request"
    number_field: str = "number"
    # Rule 1, exact id: a field of the change -> the event field it must equal.
    exact: dict[str, Literal["build_id", "build_commit_sha", "build_url", "description", "initiator"]] = Field(
        default_factory=dict
    )
    # Rule 2, time window: the change's window contains the deployment's time, for the same service.
    window: bool = True
    window_fields: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default_factory=lambda: [["work_start", "work_end"], ["start_date", "end_date"]], min_length=1
    )
    service_field: str = "cmdb_ci"
    # cmdb_ci (its display value or its sys_id) -> DevGrid entityId.
    services: dict[str, str] = Field(default_factory=dict)
    # Only events in these environments are given a change_id.
    envs: list[str] = Field(default_factory=lambda: ["production"], min_length=1)

    @model_validator(mode="after")
    def _some_rule(self) -> ChangeRequests:
        if not self.exact and not (self.window and self.services):
            raise ValueError(
                "exact: no rule can match; set [enrich.exact] (a change field = an event field) "
                "and/or [enrich.services] (cmdb_ci = entityId) for the time-window rule"
            )
        return self


class Incidents(EnrichBase):
    """``type = "servicenow-incidents"``: incidents, linked to the deployment whose change_id they name."""

    type: Literal["servicenow-incidents"]
    table: str = "incident"
    number_field: str = "number"
    opened_field: str = "opened_at"
    resolved_field: str = "resolved_at"
    priority_field: str = "priority"
    # The fields naming the change request that caused the incident; the first non-empty wins.
    caused_by_fields: list[str] = Field(default_factory=lambda: ["u_caused_by_deployment", "caused_by"], min_length=1)


EnrichConfigs = Annotated[ChangeRequests | Incidents, Field(discriminator="type")]
ENRICH_MODELS: dict[str, type[ChangeRequests] | type[Incidents]] = {
    "servicenow-changes": ChangeRequests,
    "servicenow-incidents": Incidents,
}
ENRICH_TYPES = tuple(ENRICH_MODELS)
