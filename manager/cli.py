"""The ``servetune`` command line: one entry point over the Python API, thin subcommands.

Exit codes: 0 ok, 1 failure (a study with no successful trial, an engine that failed), 2 usage
or configuration error (printed as one message, no traceback; ``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from common.config import StudyConfig, load_study
from common.errors import ConfigError, InfraError, ServetuneError
from common.params import to_argv
from common.results import TrialRecord, TrialStatus, latest_attempts

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        from worker.sim.cli import main as sim_main

        return sim_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except ConfigError as e:
        _error(args, f"configuration error: {e}")
        return EXIT_USAGE
    except InfraError as e:
        _error(args, f"infrastructure error: {e}")
        return EXIT_FAILURE
    except ServetuneError as e:
        _error(args, str(e))
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servetune", description=(
        "Find the best launch configuration for vLLM, SGLang and TensorRT-LLM deployments."))
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a study")
    run.add_argument("study", type=Path, help="study file (YAML or JSON)")
    run.add_argument("--address", help="Ray address: local, auto, or host:port "
                     "(default: the study's cluster.address)")
    run.add_argument("--database-url", help="SQLAlchemy URL (default: $SERVETUNE_DATABASE_URL, "
                     "else the study's storage.database_url, else SQLite in the results dir)")
    run.add_argument("--replace", action="store_true", help="delete an earlier run of this "
                     "study (same name) from the database first, instead of refusing to mix "
                     "their trials")
    run.set_defaults(handler=_run)

    resume = sub.add_parser("resume", help="continue a study whose driver died (from the "
                            "database: lost and cancelled trials run again, finished ones "
                            "are kept)")
    resume.add_argument("study", help="the study file, or the study's name (its config is "
                        "read from the database)")
    resume.add_argument("--address", help="Ray address (default: the study's cluster.address)")
    resume.add_argument("--database-url", help="default: $SERVETUNE_DATABASE_URL, else the "
                        "study's storage.database_url, else SQLite in the results dir")
    resume.set_defaults(handler=_resume)

    cancel = sub.add_parser("cancel", help="stop a running study: its driver tears its trials "
                            "down and records them cancelled (`servetune resume` continues it)")
    _study_in_database(cancel)
    cancel.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                        help="wait this long for the driver to stop the study (0: do not wait; "
                        "default 120)")
    cancel.set_defaults(handler=_cancel)

    validate = sub.add_parser("validate", help="check a study without running it")
    validate.add_argument("study", type=Path)
    validate.set_defaults(handler=_validate)

    trials = sub.add_parser("trials", help="list a study's trials from the database")
    _study_in_database(trials)
    trials.add_argument("--attempts", action="store_true",
                        help="every attempt of each trial (retries, resumed runs), not only "
                        "its last")
    trials.set_defaults(handler=_trials)

    status = sub.add_parser("status", help="where a study stands: trials by outcome, "
                            "running trials, best so far (reads the database only)")
    _study_in_database(status)
    status.set_defaults(handler=_status)

    clean = sub.add_parser("clean", help="remove servetune's containers no live trial owns")
    clean.add_argument("--study", help="only this study's containers (default: all studies)")
    clean.set_defaults(handler=_clean)

    serve = sub.add_parser("serve", help="serve the read API and report page (read-only)")
    _database_url_option(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--root-path", help="path prefix behind a reverse proxy, e.g. "
                       "/servetune (default: $SERVETUNE_API_ROOT_PATH)")
    serve.set_defaults(handler=_serve)

    sub.add_parser("sim", help="the simulated serving engine: servetune sim "
                   "{serve,predict,image}")
    return parser


def _study_in_database(parser: argparse.ArgumentParser) -> None:
    """The arguments of a subcommand that reads a study from the database by name."""
    parser.add_argument("name", help="study name")
    _database_url_option(parser)


def _database_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="default: $SERVETUNE_DATABASE_URL, else "
                        "./servetune-results/servetune.db")


def _load(path: Path, address: str | None = None) -> StudyConfig:
    return _on_cluster(load_study(path), address)


def _on_cluster(study: StudyConfig, address: str | None) -> StudyConfig:
    """The study with the Ray address to run on: ``--address``, else the study's own, except
    that a local study joins the cluster ``$RAY_ADDRESS`` names (a Ray job's driver, or a
    shell pointed at a cluster) instead of starting a second Ray inside it."""
    if address is None and os.environ.get("RAY_ADDRESS") and study.cluster.address == "local":
        address = "auto"
        print(f"$RAY_ADDRESS is set ({os.environ['RAY_ADDRESS']}): running on that cluster "
              "(pass --address local for a private Ray instance)", flush=True)
    if address:
        cluster = study.cluster.model_copy(update={"address": address})
        study = study.model_copy(update={"cluster": cluster})
    return study


def _validate(args: argparse.Namespace) -> int:
    from manager.paths import StudyPaths
    from manager.preflight import preflight
    from manager.space import build_plan, describe

    study = load_study(args.study)
    preflight(study)
    paths = StudyPaths.resolve(study, args.study.resolve().parent)
    plan = build_plan(study, study.cluster.gpus_per_node)
    print(f"study {study.name}: {study.engine.name}"
          f"{' (simulated)' if study.engine.simulated else ''} serving {study.model.name}, "
          f"{study.search.algorithm} search, up to {study.search.max_trials} trials, "
          f"{study.search.max_concurrent_trials} at once")
    for line in describe(plan):
        print("  " + line)
    for line in study.intent_overrides():
        print(f"  warning: {line}")
    print(f"  benchmark: {', '.join(study.benchmark.scenarios)} at concurrency "
          f"{', '.join(map(str, study.benchmark.concurrency))}")
    print(f"  results: {paths.results_dir} (database {_redact(paths.database_url)})")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from manager.driver import run_study
    from manager.paths import StudyPaths
    from manager.space import build_plan, describe

    study = _load(args.study, args.address)
    paths = StudyPaths.resolve(study, args.study.resolve().parent, args.database_url)
    if study.cluster.address == "local":
        for line in describe(build_plan(study, study.cluster.gpus_per_node)):
            print(line)
    print(f"study {study.name}: results in {paths.results_dir}, database "
          f"{_redact(paths.database_url)}", flush=True)
    if args.replace:
        from common.store import Store

        with Store.open(paths.database_url) as store:
            if store.delete_study(study.name):
                print(f"--replace: deleted the earlier run of {study.name} from the database",
                      flush=True)
    outcome = run_study(study, paths)
    _print_summary(study, outcome.trials, outcome.pareto_front)
    if outcome.interrupted:
        print("interrupted: running trials were stopped and torn down; finished trials are "
              "in the database; `servetune resume` continues the study")
        return EXIT_FAILURE
    print(f"{len(outcome.trials)} trials in {outcome.wall_s:.0f} s")
    return EXIT_OK if outcome.best else EXIT_FAILURE


def _resume(args: argparse.Namespace) -> int:
    from common.store import Store
    from manager.driver import run_study
    from manager.paths import StudyPaths

    path = Path(args.study)
    if path.is_file():
        study = _load(path, args.address)
        paths = StudyPaths.resolve(study, path.resolve().parent, args.database_url)
        with Store.open(paths.database_url) as store:
            info = store.study(study.name)
    else:
        url = _database_url(args)
        with Store.open(url) as store:
            info = store.study(args.study)
        if info is None:
            raise ConfigError(f"no study named {args.study!r} in {_redact(url)} (and no such "
                              "file)", path="study", value=args.study)
        study = _on_cluster(StudyConfig.model_validate(info.config), args.address)
        paths = StudyPaths.resolve(study, Path.cwd(), url)
    name = study.name
    if info is None:
        raise ConfigError(f"study {name!r} is not in {_redact(paths.database_url)}: nothing to "
                          "resume (`servetune run` starts it)", path="study", value=name)
    if info.status.value == "succeeded":
        print(f"study {name} already finished; nothing to resume")
        return EXIT_OK
    print(f"study {name}: results in {paths.results_dir}, database "
          f"{_redact(paths.database_url)}", flush=True)
    outcome = run_study(study, paths, resume=True)
    _print_summary(study, outcome.trials, outcome.pareto_front)
    if outcome.interrupted:
        print("interrupted: `servetune resume` continues it again")
        return EXIT_FAILURE
    print(f"{len(outcome.trials)} trials in {outcome.wall_s:.0f} s")
    return EXIT_OK if outcome.best else EXIT_FAILURE


def _cancel(args: argparse.Namespace) -> int:
    import time

    from common.store import Store

    url = _database_url(args)
    with Store.open(url) as store:
        info = store.request_cancel(args.name)
        if info is None:
            raise ConfigError(f"no study named {args.name!r} in {_redact(url)}", path="name",
                              value=args.name)
        if info.status.value != "running":
            print(f"study {args.name} is not running ({info.status.value}): nothing to cancel")
            return EXIT_OK
        print(f"study {args.name}: cancel requested; its driver stops its trials within "
              "seconds", flush=True)
        deadline = time.monotonic() + args.wait
        while args.wait > 0 and time.monotonic() < deadline:
            time.sleep(1.0)
            info = store.study(args.name)
            if info is not None and info.status.value != "running":
                print(f"study {args.name}: {info.status.value}")
                return EXIT_OK
    if args.wait > 0:
        print(f"study {args.name}: still running after {args.wait:g} s (is its driver alive? "
              "a dead driver's study is continued with `servetune resume`)")
        return EXIT_FAILURE
    return EXIT_OK


def _database_url(args: argparse.Namespace) -> str:
    """--database-url, else $SERVETUNE_DATABASE_URL, else ./servetune-results/servetune.db."""
    return (args.database_url or os.environ.get("SERVETUNE_DATABASE_URL")
            or f"sqlite:///{Path('servetune-results/servetune.db').resolve()}")


def _trials(args: argparse.Namespace) -> int:
    from common.store import Store

    url = _database_url(args)
    store = Store.open(url)
    try:
        info = store.study(args.name)
        if info is None:
            raise ConfigError(f"no study named {args.name!r} in {_redact(url)}",
                              path="name", value=args.name)
        records = store.trials(args.name)
    finally:
        store.close()
    latest = latest_attempts(records)
    if args.attempts:
        _print_table(records, limit=None, attempts=True)
    else:
        _print_table(latest, limit=None)
        earlier = len(records) - len(latest)
        if earlier:
            print(f"({earlier} earlier attempt(s) of retried trials not shown: --attempts "
                  "lists them)")
    if info.pareto_front is not None:
        study = StudyConfig.model_validate(info.config)
        _print_pareto(study, records, info.pareto_front)
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from common.results import utcnow
    from common.store.readonly import StoreReader
    from manager.status import render, study_progress

    url = _database_url(args)
    with StoreReader.open(url, pool_size=1) as reader:
        progress = study_progress(reader, args.name, utcnow())
    if progress is None:
        raise ConfigError(f"no study named {args.name!r} in {_redact(url)}",
                          path="name", value=args.name)
    print("\n".join(render(progress)))
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from manager.api.app import create_app
    from manager.api.settings import ApiSettings

    settings = ApiSettings.from_env(database_url=args.database_url, host=args.host,
                                    port=args.port, root_path=args.root_path)
    app = create_app(settings)
    auth = "bearer token required" if settings.token else "no authentication"
    print(f"servetune API on http://{settings.host}:{settings.port}{settings.root_path} "
          f"({auth}), database {_redact(settings.database_url)}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                proxy_headers=True, forwarded_allow_ips="127.0.0.1")
    return EXIT_OK


def _clean(args: argparse.Namespace) -> int:
    from worker.launchers.docker_janitor import remove_orphans

    removed = remove_orphans(args.study, live_trials=None)
    for container in removed:
        print(f"removed {container.name} (study {container.study}, trial {container.trial}, "
              f"{container.status})")
    print(f"{len(removed)} container(s) removed")
    return EXIT_OK


def _print_summary(study: StudyConfig, records: list[TrialRecord],
                   front: list[int] | None = None) -> None:
    succeeded = [r for r in records if r.status is TrialStatus.SUCCEEDED]
    failed = [r for r in records if r.status is TrialStatus.FAILED]
    print(f"\n{len(succeeded)} succeeded, {len(failed)} failed")
    if not succeeded:
        return
    ranked = sorted(succeeded, key=lambda r: r.score or float("-inf"), reverse=True)
    print("best trials:")
    _print_table(ranked, limit=5)
    if study.objective.multi:
        _print_pareto(study, records, front)
    best = ranked[0]
    term = study.objective.terms[0]
    print(f"\nbest: trial {best.number}{' (the baseline)' if best.baseline else ''}, "
          f"{term.label} = {best.objective_value:.4g}")
    gain = baseline_gain(study, records, best)
    if gain is not None:
        print(f"gain over the baseline (trial 0, engine defaults): {gain:+.1%}")
    print("launch it with:\n  " + native_command(study, best))
    if study.engine.simulated:
        print("(simulated here with:\n  " + shlex.join(best.argv) + ")")


def baseline_gain(study: StudyConfig, records: list[TrialRecord],
                  best: TrialRecord) -> float | None:
    """How much better the best trial's objective is than the baseline's (None without a
    succeeded baseline): a ratio minus one, positive when better, for either direction."""
    baseline = next((r for r in records if r.baseline
                     and r.status is TrialStatus.SUCCEEDED), None)
    if baseline is None or not baseline.objective_value or not best.objective_value:
        return None
    if study.objective.maximize:
        return best.objective_value / baseline.objective_value - 1.0
    return baseline.objective_value / best.objective_value - 1.0


def _print_pareto(study: StudyConfig, records: list[TrialRecord],
                  front: list[int] | None) -> None:
    from manager.driver import study_pareto_front

    numbers = front if front is not None else study_pareto_front(study, records) or []
    terms = study.objective.terms
    by_number = {r.number: r for r in records}
    print(f"\nPareto front ({len(numbers)} trials): "
          + " vs ".join(f"{t.label} ({'max' if t.maximize else 'min'})" for t in terms))
    for number in numbers:
        record = by_number[number]
        values = ", ".join(f"{t.label}={v:.4g}"
                           for t, v in zip(terms, record.objective_values or [], strict=False))
        params = ", ".join(f"{k}={v}" for k, v in record.params.items())
        print(f"  trial {number:>4}: {values}  [{params}]")


def native_command(study: StudyConfig, record: TrialRecord) -> str:
    """The real engine's command line for a trial's flags."""
    from worker.engines import get_engine

    flags = {**study.fixed_flags, **record.params}
    # The engine's own environment, not servetune's venv.
    engine = get_engine(study.engine.name, python="python3")
    native = to_argv(study.engine.name, flags, version=study.engine.version)
    argv = engine.command(study.model.name, native, "0.0.0.0", 8000, study.model.served)
    gpus = len(record.gpu_ids)
    return f"CUDA_VISIBLE_DEVICES={','.join(str(i) for i in range(gpus))} {shlex.join(argv)}"


def _print_table(records: list[TrialRecord], limit: int | None,
                 attempts: bool = False) -> None:
    """One line per record; ``attempts``: the trial column is ``<number>.<attempt>``."""
    print(f"{'trial':>5} {'status':<10} {'reason':<18} {'score':>10} {'gpus':<9} "
          f"{'ttft ms':>8} {'tpot ms':>8} {'out tok/s':>9}  params")
    for record in records[:limit]:
        levels = record.levels
        ttft = _mean([lv.ttft_ms.mean for lv in levels])
        tpot = _mean([lv.tpot_ms.mean for lv in levels])
        tput = _mean([lv.output_tokens_per_s for lv in levels])
        score = f"{record.score:.4g}" if record.score is not None else "-"
        params = ", ".join(f"{k}={v}" for k, v in record.params.items())
        number = (f"{record.number}{f'.{record.attempt}' if attempts else ''}"
                  f"{'*' if record.baseline else ''}")
        print(f"{number:>5} {record.status.value:<10} "
              f"{(record.reason.value if record.reason else ''):<18} {score:>10} "
              f"{','.join(record.gpu_ids):<9} {ttft:>8} {tpot:>8} {tput:>9}  {params}")


def _mean(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{sum(values) / len(values):.1f}" if values else "-"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _error(args: argparse.Namespace, message: str) -> None:
    if getattr(args, "debug", False):
        logging.exception(message)
    print(f"servetune: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
