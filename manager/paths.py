"""Where a study's results go: the results directory and the database URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.config import StudyConfig

DATABASE_URL_ENV = "SERVETUNE_DATABASE_URL"


@dataclass(frozen=True)
class StudyPaths:
    results_dir: Path
    database_url: str

    @classmethod
    def resolve(cls, study: StudyConfig, base_dir: Path,
                database_url: str | None = None) -> StudyPaths:
        results = Path(study.storage.results_dir)
        if not results.is_absolute():
            results = (base_dir / results).resolve()
        # Deployment settings: the command line, then the environment (a Ray job's), then the
        # study file, then the embedded default.
        url = (database_url or os.environ.get(DATABASE_URL_ENV) or study.storage.database_url
               or f"sqlite:///{results / 'servetune.db'}")
        return cls(results, url)
