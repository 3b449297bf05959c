"""Studies: the list, one study, its best config, and its progress (ETag and SSE)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from common.results import utcnow
from common.store.queries import StudyFilter
from common.store.study import StudyStatus
from manager.api import conversions
from manager.api.deps import (
    NotFound,
    Reader,
    Settings,
    StudyName,
    StudyRowOf,
    find_study,
    find_study_counts,
)
from manager.api.schemas import BestConfigOut, ProgressOut, StudiesPage, StudyDetailOut

router = APIRouter(prefix="/studies", tags=["studies"])
MAX_LIMIT = 200
MAX_OFFSET = 1_000_000
HEARTBEAT_S = 15.0


@router.get("", response_model=StudiesPage, summary="List studies, newest first")
def list_studies(
        reader: Reader,
        status: Annotated[StudyStatus | None, Query(description="only this status")] = None,
        name_contains: Annotated[str | None, Query(
            max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
            description="only names containing this")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> StudiesPage:
    summaries, count = reader.studies(StudyFilter(status, name_contains), limit, offset)
    return StudiesPage(data=[conversions.study_out(s) for s in summaries], count=count)


@router.get("/{name}", response_model=StudyDetailOut, summary="One study")
def get_study(reader: Reader, name: StudyName) -> StudyDetailOut:
    """The study's config as submitted, progress, best trial and, for multi-objective
    studies, its Pareto front."""
    study = find_study(reader, name)
    front = getattr(study.row, "pareto_front", None)
    pareto = reader.trials_with_runs(study.row, list(front)) if front is not None else None
    fingerprint = reader.fingerprint(name)
    return conversions.study_detail_out(study, fingerprint, pareto, utcnow())


@router.get("/{name}/best", response_model=BestConfigOut,
            summary="The best trial's config as a launch command and a YAML snippet")
def best_config(reader: Reader, study: StudyRowOf) -> BestConfigOut:
    best = reader.best_trial(study)
    if best is None:
        raise NotFound(f"study {study.name!r} has no succeeded trial yet")
    return conversions.best_config_out(study, best)


@router.get("/{name}/progress", response_model=ProgressOut,
            responses={304: {"description": "unchanged since the ETag given"}},
            summary="Progress, for conditional polling (ETag / If-None-Match)")
def progress(reader: Reader, name: StudyName, response: Response,
             if_none_match: Annotated[str | None, Header(max_length=512)] = None
             ) -> ProgressOut | Response:
    fingerprint = reader.fingerprint(name)
    if fingerprint is None:
        raise NotFound(f"no study named {name!r}")
    etag = f'"{fingerprint.tag}"'
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    summary = find_study_counts(reader, name)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"
    return conversions.progress_out(summary, fingerprint, utcnow())


@router.get("/{name}/events", summary="Live progress as Server-Sent Events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`progress` events (ProgressOut as JSON) "
                             "whenever the study changes; ends when it is terminal"}})
async def events(reader: Reader, settings: Settings, name: StudyName,
                 request: Request) -> StreamingResponse:
    if await run_in_threadpool(reader.fingerprint, name) is None:
        raise NotFound(f"no study named {name!r}")
    return StreamingResponse(_progress_events(reader, settings.poll_interval_s,
                                              settings.events_max_s, name, request),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _progress_events(reader: Reader, poll_s: float, max_s: float, name: str,
                           request: Request) -> AsyncIterator[str]:
    """One ``progress`` event now and after each change; a comment line as heartbeat; the
    stream ends when the study is terminal, the client leaves, or after ``max_s``."""
    deadline = time.monotonic() + max_s
    last_tag = None
    last_sent = time.monotonic()
    yield f"retry: {int(poll_s * 1000)}\n\n"
    while time.monotonic() < deadline:
        fingerprint = await run_in_threadpool(reader.fingerprint, name)
        if fingerprint is None:
            return
        if fingerprint.tag != last_tag:
            summary = await run_in_threadpool(find_study_counts, reader, name)
            out = conversions.progress_out(summary, fingerprint, utcnow())
            data = json.dumps(out.model_dump(mode="json"))
            yield f"event: progress\nid: {out.tag}\ndata: {data}\n\n"
            last_tag, last_sent = fingerprint.tag, time.monotonic()
            if StudyStatus(fingerprint.status).terminal:
                return
        elif time.monotonic() - last_sent > HEARTBEAT_S:
            yield ": heartbeat\n\n"
            last_sent = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(poll_s)
