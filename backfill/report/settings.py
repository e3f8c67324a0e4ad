"""The ``[report]`` table of the config: what ``backfill report`` measures and where git lives."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from backfill.model import Model


class ReportSettings(Model):
    # The environment DORA's metrics are about; DevGrid counts production deployments only.
    environment: str = Field(default="production", min_length=1)
    # Deployment-signal proxy: a deployment followed by a rollback or hotfix within this many hours failed.
    failure_window_hours: float = Field(default=24.0, gt=0, le=24 * 366)
    # Per entity id, a local git repository its deployments' commits live in (git-tags sources need none).
    repos: dict[str, str] = Field(default_factory=dict)

    @field_validator("repos")
    @classmethod
    def _relative_to_config(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        base = (info.context or {}).get("base_dir")
        return {entity: str(Path(base, path)) if base else path for entity, path in value.items()}
