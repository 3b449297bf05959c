"""servetune's exception root and its branches, split by who must act.

- ``ConfigError``: the user (fix the study file, flag or environment setting); the CLI exits 2.
- ``TrialError``: this trial failed (deploy, readiness, benchmark); the trial boundary turns it
  into data the searcher learns from.
- ``InfraError``: the platform (storage, cluster); propagates so the run can be retried.

Raise with ``raise ... from e`` so the SDK error stays in the chain.
"""

from __future__ import annotations

from collections.abc import Sequence


class ServetuneError(Exception):
    """Root of every error servetune raises on purpose."""


class ConfigError(ServetuneError):
    """A setting the user gave is wrong; the message says which, the bad value and the fix.

    ``path`` names the setting (``engine.tp_size``, ``SERVETUNE_DATABASE_URL``), ``value`` is
    what was given (secrets redacted by the raiser) and ``allowed`` lists valid choices when the
    set is small.
    """

    def __init__(self, message: str, *, path: str | None = None, value: object = None,
                 allowed: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.value = value
        self.allowed = tuple(allowed) if allowed is not None else None


class TrialError(ServetuneError):
    """One trial failed: its engine did not deploy, never became ready or the benchmark failed."""


class InfraError(ServetuneError):
    """The platform failed (storage, cluster), not the trial or the user's configuration."""


class StoreUnavailable(InfraError):
    """The results database cannot be reached or used right now.

    ``url`` is the database URL with its password hidden, or ``None`` where unknown.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url
