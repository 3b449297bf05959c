"""Dependencies the routes inject: the reader, the settings, authentication, path values."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common.errors import ServetuneError
from common.store.models import StudyRow
from common.store.queries import StudySummary
from common.store.readonly import StoreReader
from manager.api.settings import ApiSettings

STUDY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # StudyConfig.name's rule
MAX_TRIAL_NUMBER = 2**31 - 1  # the column is a 32-bit integer

_bearer = HTTPBearer(auto_error=False, description="the token in $SERVETUNE_API_TOKEN")


class NotFound(ServetuneError):
    """A study or trial the request names does not exist (HTTP 404)."""


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_reader(request: Request) -> StoreReader:
    """The app's reader: every call its own transaction."""
    reader: StoreReader = request.app.state.reader
    return reader


def request_reader(request: Request) -> Iterator[StoreReader]:
    """The app's reader with the request's calls in one transaction, so the study lookup of
    a dependency and the handler's queries share one connection checkout (each checkout
    costs a pre-ping round trip and a BEGIN). It ends when the handler returns, before the
    response is sent: a streamed body reads on in short transactions of its own."""
    with get_reader(request).transaction() as reader:
        yield reader


def require_token(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """401 unless the request carries the configured bearer token (no-op without one).

    Compared in constant time, on bytes (a non-ASCII header must not raise)."""
    expected = get_settings(request).token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


Reader = Annotated[StoreReader, Depends(request_reader, scope="function")]
"""The reader for this request (one transaction until the handler returns)."""
SharedReader = Annotated[StoreReader, Depends(get_reader)]
"""The app's reader, for a handler that answers a failed query itself (health): after a
failed statement a transaction cannot go on, but the next call of this reader can."""
Settings = Annotated[ApiSettings, Depends(get_settings)]
StudyName = Annotated[str, Path(pattern=STUDY_NAME_PATTERN, description="study name")]
TrialNumber = Annotated[int, Path(ge=0, le=MAX_TRIAL_NUMBER, description="trial number")]


def find_study(reader: StoreReader, name: str) -> StudySummary:
    """The study with its best trial loaded, or ``NotFound``."""
    return _found(reader.study(name), name)


def find_study_counts(reader: StoreReader, name: str) -> StudySummary:
    """The study without its best trial (counts, best score and number), or ``NotFound``."""
    return _found(reader.study_counts(name), name)


def _found(summary: StudySummary | None, name: str) -> StudySummary:
    if summary is None:
        raise NotFound(f"no study named {name!r}")
    return summary


def get_study(reader: Reader, name: StudyName) -> StudySummary:
    return find_study_counts(reader, name)


def get_study_row(reader: Reader, name: StudyName) -> StudyRow:
    row = reader.study_row(name)
    if row is None:
        raise NotFound(f"no study named {name!r}")
    return row


Study = Annotated[StudySummary, Depends(get_study)]
"""The study with its counts and best score and number, not its best trial (a few
queries)."""
StudyRowOf = Annotated[StudyRow, Depends(get_study_row)]
"""The study's row alone (one query), for routes that need only its id and config."""
