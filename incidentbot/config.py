"""Settings: the one place that reads the environment (and `.env`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from incidentbot.core.severity import Severity

PROJECT_DIR = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    """Every setting the bot reads, with its default; see `.env.example`."""

    # `.env` beside app.py, then in the current directory (which wins)
    model_config = SettingsConfigDict(env_file=(PROJECT_DIR / ".env", ".env"),
                                      env_file_encoding="utf-8", extra="ignore")

    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_app_token: str = ""
    slack_api_url: str = "https://slack.com/api/"
    database_url: str = "sqlite:///incidentbot.db"
    host: str = "0.0.0.0"
    port: int = Field(default=3000, ge=0, le=65535)
    http_listener: bool = True  # in Socket Mode: serve probes, metrics and webhooks on PORT
    server_threads: int = Field(default=16, ge=1, le=256)
    work_threads: int = Field(default=32, ge=1, le=256)
    job_lease_seconds: float = Field(default=60, gt=0)
    job_retry_seconds: float = Field(default=1, gt=0)
    incident_channel_prefix: str = "inc"
    broadcast_channel: str = ""
    reminder_sev1_minutes: float = Field(default=15, ge=0)
    reminder_sev2_minutes: float = Field(default=30, ge=0)
    reminder_sev3_minutes: float = Field(default=60, ge=0)
    reminder_sev4_minutes: float = Field(default=0, ge=0)
    reminder_retry_seconds: float = Field(default=30, gt=0)
    postmortem_template: str = ""
    incident_admins: str = ""
    alert_webhook_token: str = ""
    services_file: str = ""
    escalation_minutes: float = Field(default=5, gt=0)
    page_repeats: int = Field(default=2, ge=0, le=10)
    auto_page: bool = True  # a new alert incident of a catalog service pages its on-call
    archive_after_days: float = Field(default=7, ge=0)
    stale_after_days: float = Field(default=14, gt=0)
    sweep_minutes: float = Field(default=60, gt=0)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"use one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("incident_channel_prefix")
    @classmethod
    def _prefix_is_channel_safe(cls, value: str) -> str:
        prefix = value.strip().lower()
        if not prefix or len(prefix) > 20 or not all(c.isalnum() or c in "-_" for c in prefix):
            raise ValueError("use 1-20 lowercase letters, digits, '-' or '_'")
        return prefix

    @property
    def socket_mode(self) -> bool:
        """Socket Mode is used whenever an app-level token is configured."""
        return bool(self.slack_app_token)

    def reminder_minutes(self, severity: Severity) -> float:
        """The update-reminder interval for a severity (0 means no reminders)."""
        return float(getattr(self, f"reminder_{severity.value.lower()}_minutes"))

    @property
    def admin_ids(self) -> frozenset[str]:
        """User (U…/W…) and user-group (S…) IDs allowed to run any incident."""
        return frozenset(p.strip() for p in self.incident_admins.replace(" ", ",").split(",")
                         if p.strip())

    def missing_credentials(self) -> list[str]:
        """Names of the settings that must still be set for the chosen connection mode."""
        missing = [] if self.slack_bot_token else ["SLACK_BOT_TOKEN"]
        if not self.socket_mode and not self.slack_signing_secret:
            missing.append("SLACK_SIGNING_SECRET")
        return missing


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raises `ConfigError` with a readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: "
            f"{err['msg'].removeprefix('Value error, ')}" for err in exc.errors()
        )
        raise ConfigError(f"Invalid settings: {problems}") from None


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which and how to fix it."""
