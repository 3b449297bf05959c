"""The report: HTML pages (server-rendered, no build step), their plot data and assets.

Plots are drawn in the browser by plotly.js, served from the installed ``plotly`` package
(the page works offline); the study page listens to the study's event stream and redraws
while it runs.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from common.results import utcnow
from common.store.models import StudyRow
from common.store.queries import StudyFilter, TrialFilter, TrialSort
from manager.api import conversions
from manager.api.deps import (
    NotFound,
    Reader,
    Study,
    StudyName,
    StudyRowOf,
    TrialNumber,
    find_study,
)
from manager.api.report import plots_out
from manager.api.schemas import PlotsOut

api_router = APIRouter(tags=["report"])
router = APIRouter(tags=["report"])
assets_router = APIRouter(include_in_schema=False)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
STATIC_DIR = PACKAGE_DIR / "static"
TABLE_ROWS = 200  # trials in the report's table (best first); the API pages through all
_templates = Environment(loader=FileSystemLoader(PACKAGE_DIR / "templates"),
                         autoescape=select_autoescape(["html"]), trim_blocks=True,
                         lstrip_blocks=True)
_ASSETS = {"report.js": "text/javascript", "report.css": "text/css"}
_CACHE = "public, max-age=3600"


@api_router.get("/studies/{name}/plots", response_model=PlotsOut,
                summary="The data behind the report page's plots")
def plots(request: Request, reader: Reader, study: StudyRowOf) -> PlotsOut:
    fingerprint = reader.fingerprint(study.name)
    tag = fingerprint.tag if fingerprint is not None else ""
    return plots_out(reader, study, tag, request.app.state.effects)


@router.get("/", include_in_schema=False)
def root(request: Request) -> RedirectResponse:
    return RedirectResponse(_url(request, "/report"))


@router.get("/report", response_class=HTMLResponse, summary="Report: every study")
def report_index(request: Request, reader: Reader,
                 offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> HTMLResponse:
    summaries, count = reader.studies(StudyFilter(), 100, offset)
    return _page(request, "index.html", studies=[conversions.study_out(s) for s in summaries],
                 count=count, offset=offset)


@router.get("/report/studies/{name}", response_class=HTMLResponse,
            summary="Report: one study, with plots that update while it runs")
def report_study(request: Request, reader: Reader, name: StudyName) -> HTMLResponse:
    study = find_study(reader, name)
    fingerprint = reader.fingerprint(name)
    trials = _table_rows(reader, study.row)
    detail = conversions.study_detail_out(study, fingerprint, None, utcnow())
    return _page(request, "study.html", study=detail, trials=trials)


@router.get("/report/studies/{name}/table", response_class=HTMLResponse,
            summary="Report: the trials table of a study (an HTML fragment)")
def report_table(request: Request, reader: Reader, study: Study) -> HTMLResponse:
    trials = _table_rows(reader, study.row)
    return _page(request, "table.html", study=conversions.study_out(study), trials=trials)


@router.get("/report/studies/{name}/trials/{number}", response_class=HTMLResponse,
            summary="Report: one trial")
def report_trial(request: Request, reader: Reader, study: Study,
                 number: TrialNumber) -> HTMLResponse:
    row = reader.trial(study.row, number)
    attempts = reader.attempts(study.row, number) if row is not None else []
    if row is None:
        raise NotFound(f"study {study.row.name!r} has no trial {number}")
    trial = conversions.trial_out(row, attempts)
    return _page(request, "trial.html", study=conversions.study_out(study), trial=trial)


@assets_router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    path = resources.files("plotly") / "package_data" / "plotly.min.js"
    return FileResponse(str(path), media_type="text/javascript",
                        headers={"Cache-Control": _CACHE})


@assets_router.get("/static/{asset}")
def asset(asset: str) -> FileResponse:
    if asset not in _ASSETS:
        raise NotFound(f"no asset {asset!r}")
    return FileResponse(STATIC_DIR / asset, media_type=_ASSETS[asset],
                        headers={"Cache-Control": "no-cache"})


def _table_rows(reader: Reader, study: StudyRow) -> list[Any]:
    rows, _ = reader.trials(study, TrialFilter(), TrialSort("score", descending=True),
                            TABLE_ROWS, 0)
    aggregates = reader.level_aggregates([row.id for row in rows])
    return [conversions.trial_summary_out(row, aggregates.get(row.id)) for row in rows]


def _url(request: Request, path: str) -> str:
    return f"{request.scope.get('root_path', '')}{path}"


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    base = request.scope.get("root_path", "")
    html = _templates.get_template(template).render(base=base, **context)
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})
