"""The read API: a FastAPI service over the results database, with an HTML report.

Read-only (``common.store.readonly.StoreReader``); imports neither Ray, Docker nor the worker
(an import-linter contract holds it to that). Build it with ``create_app(settings)``::

    from manager.api.app import create_app
    from manager.api.settings import ApiSettings
    app = create_app(ApiSettings.from_env())
"""
