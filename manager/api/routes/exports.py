"""Exports: a study's trials (every attempt) and its per-level metrics, as CSV or JSON.

Streamed in chunks of rows, each read in its own short transaction, so a study of any size
downloads in bounded memory.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from common.store.models import LATENCY_METRICS, LATENCY_STATS
from common.store.readonly import StoreReader
from manager.api.conversions import Row, launch_command
from manager.api.deps import Reader, StudyRowOf
from manager.api.redact import redact_text, redact_value

router = APIRouter(prefix="/studies/{name}/export", tags=["exports"])
LEVEL_COLUMNS = ["scenario", "concurrency", "num_completed", "num_errors", "error_rate",
                 "duration_s", *(f"{m}_{s}" for m in LATENCY_METRICS for s in LATENCY_STATS),
                 "input_tokens_per_s", "output_tokens_per_s", "total_tokens_per_s",
                 "requests_per_s", "mean_input_tokens", "mean_output_tokens"]
TRIAL_COLUMNS = ["number", "attempt", "trial_id", "status", "reason", "score", "objective_value",
                 "objective_values", "num_gpus", "gpu_ids", "node", "started_at",
                 "finished_at", "duration_s", "phase_timings_s", "params", "launch_command",
                 "message"]
_EXPORT_DOC = {200: {"content": {"text/csv": {}, "application/json": {}},
                     "description": "CSV with a header row, or a JSON array"}}


class Format(str, enum.Enum):
    csv = "csv"
    json = "json"


@router.get("/trials", response_class=StreamingResponse, responses=_EXPORT_DOC,
            summary="Every trial attempt of a study")
def export_trials(reader: Reader, study: StudyRowOf,
                  format: Annotated[Format, Query()] = Format.csv) -> StreamingResponse:
    space = study.config.get("search_space")
    param_names = [str(k) for k in space] if isinstance(space, dict) else []

    def records(rows: list[Row]) -> Iterator[dict[str, Any]]:
        for row in rows:
            yield _trial_record(row, param_names, flat=format is Format.csv)

    return _stream(reader, study, records, format, f"{study.name}-trials", with_runs=False,
                   header=[*TRIAL_COLUMNS, *(f"param.{name}" for name in param_names)])


@router.get("/levels", response_class=StreamingResponse, responses=_EXPORT_DOC,
            summary="Every benchmark run (one row per trial attempt and level) of a study")
def export_levels(reader: Reader, study: StudyRowOf,
                  format: Annotated[Format, Query()] = Format.csv) -> StreamingResponse:
    def records(rows: list[Row]) -> Iterator[dict[str, Any]]:
        for row in rows:
            for run in row.benchmark_runs:
                yield {"number": row.number, "attempt": row.attempt, "status": row.status,
                       **{name: getattr(run, name) for name in LEVEL_COLUMNS}}

    return _stream(reader, study, records, format, f"{study.name}-levels", with_runs=True,
                   header=["number", "attempt", "status", *LEVEL_COLUMNS])


def _trial_record(row: Row, param_names: list[str], flat: bool) -> dict[str, Any]:
    duration = ((row.finished_at - row.started_at).total_seconds()
                if row.finished_at is not None else None)
    params = redact_value(dict(row.params))
    record: dict[str, Any] = {
        "number": row.number, "attempt": row.attempt, "trial_id": row.trial_id,
        "status": row.status, "reason": row.reason, "score": row.score,
        "objective_value": row.objective_value,
        "objective_values": getattr(row, "objective_values", None),
        "num_gpus": len(row.gpu_ids), "gpu_ids": list(row.gpu_ids), "node": row.node,
        "started_at": row.started_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "duration_s": duration, "phase_timings_s": dict(row.phase_timings),
        "params": params, "launch_command": launch_command(row),
        "message": redact_text(row.message),
    }
    if not flat:
        return record
    for name in param_names:
        record[f"param.{name}"] = params.get(name)
    for key in ("objective_values", "gpu_ids", "phase_timings_s", "params"):
        value = record[key]
        record[key] = (",".join(value) if key == "gpu_ids"
                       else json.dumps(value) if value is not None else None)
    return record


def _stream(reader: StoreReader, study: Row,
            records: Callable[[list[Row]], Iterator[dict[str, Any]]], format: Format,
            filename: str, with_runs: bool, header: list[str]) -> StreamingResponse:
    chunks = reader.export_chunks(study, with_runs=with_runs)
    body = (_csv_lines(chunks, records, header) if format is Format.csv
            else _json_lines(chunks, records))
    media = "text/csv" if format is Format.csv else "application/json"
    return StreamingResponse(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{filename}.{format.value}"'})


def _csv_lines(chunks: Iterator[list[Row]],
               records: Callable[[list[Row]], Iterator[dict[str, Any]]],
               header: list[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore")
    writer.writeheader()  # also for a study without trials
    yield buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    for rows in chunks:
        for record in records(rows):
            writer.writerow(record)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _json_lines(chunks: Iterator[list[Row]],
                records: Callable[[list[Row]], Iterator[dict[str, Any]]]) -> Iterator[str]:
    yield "["
    first = True
    for rows in chunks:
        parts = []
        for record in records(rows):
            parts.append(("" if first else ",") + json.dumps(record, default=str))
            first = False
        yield "".join(parts)
    yield "]"
