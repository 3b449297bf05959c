"""The results database (DESIGN.md §3): ``Store`` and the types it returns.

The only package that imports SQLAlchemy or Alembic. Import ``Store`` from here::

    from common.store import Store
    with Store.open("sqlite:///servetune-results/servetune.db") as store:
        store.create_study("llama-8b-h100", config)
"""

from common.store.store import DEFAULT_DATABASE_URL_ENV, Store
from common.store.study import StudyInfo, StudyStatus

__all__ = ["DEFAULT_DATABASE_URL_ENV", "Store", "StudyInfo", "StudyStatus"]
