"""Deployment settings of the read API, from the environment (never from a study file)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from common.errors import ConfigError

DATABASE_URL_ENV = "SERVETUNE_DATABASE_URL"
TOKEN_ENV = "SERVETUNE_API_TOKEN"
CORS_ORIGINS_ENV = "SERVETUNE_API_CORS_ORIGINS"
CORS_CREDENTIALS_ENV = "SERVETUNE_API_CORS_CREDENTIALS"
ROOT_PATH_ENV = "SERVETUNE_API_ROOT_PATH"
MIN_TOKEN_LENGTH = 16


class ApiSettings(BaseModel):
    """How the read API runs. Frozen; build it with ``from_env`` or directly in tests."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    database_url: str = Field(min_length=1)
    """SQLAlchemy URL of the results database (``$SERVETUNE_DATABASE_URL``)."""
    api_token: SecretStr | None = None
    """Bearer token every route but ``/healthz`` requires (``$SERVETUNE_API_TOKEN``); None:
    no authentication (fine on 127.0.0.1, not on a shared network)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser (``$SERVETUNE_API_CORS_ORIGINS``,
    comma-separated); empty: CORS off (same-origin only)."""
    cors_allow_credentials: bool = False
    """Let cross-origin callers send credentials; refused together with origin ``*``."""
    host: str = "127.0.0.1"
    """Address ``servetune serve`` binds to."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port ``servetune serve`` listens on."""
    root_path: str = ""
    """Path prefix a reverse proxy serves the API under, e.g. ``/servetune``
    (``$SERVETUNE_API_ROOT_PATH``); links in the report page carry it."""
    poll_interval_s: float = Field(default=2.0, gt=0, le=60)
    """How often a live-progress stream checks the database for changes."""
    events_max_s: float = Field(default=300.0, gt=0)
    """A live-progress stream ends after this long; browsers reconnect on their own."""
    statement_timeout_s: float = Field(default=10.0, gt=0)
    """PostgreSQL statement timeout of every query."""

    @model_validator(mode="after")
    def _check(self) -> ApiSettings:
        if self.api_token is not None and len(self.api_token.get_secret_value()) < \
                MIN_TOKEN_LENGTH:
            raise ValueError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters "
                             "(generate one with: python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))')")
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError(f"CORS origin '*' with credentials lets any site act as the "
                             f"user; list the origins in {CORS_ORIGINS_ENV} or set "
                             f"{CORS_CREDENTIALS_ENV}=false")
        if self.root_path and (not self.root_path.startswith("/")
                               or self.root_path.endswith("/")):
            raise ValueError(f"root_path {self.root_path!r} must start with '/' and not end "
                             "with one, e.g. /servetune")
        return self

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token is not None else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ApiSettings:
        """Settings from ``env`` (default ``os.environ``); ``overrides`` (command-line values,
        ``None`` meaning "not given") win. Raises ``ConfigError`` naming the bad setting."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "database_url": env.get(DATABASE_URL_ENV)
            or f"sqlite:///{Path('servetune-results/servetune.db').resolve()}",
            "api_token": env.get(TOKEN_ENV) or None,
            "cors_origins": tuple(o.strip() for o in env.get(CORS_ORIGINS_ENV, "").split(",")
                                  if o.strip()),
            "cors_allow_credentials": env.get(CORS_CREDENTIALS_ENV, "").lower()
            in ("1", "true", "yes"),
            "root_path": env.get(ROOT_PATH_ENV, ""),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            raise ConfigError(f"read API setting {where}: {first['msg']}", path=where) from None
