"""python -m fashion_vae.search run|rerun|report: a study whose trials are DVC experiments.

    python -m fashion_vae.search run [--storage URL] [--trials N] [--jobs J] [--push REMOTE]
    python -m fashion_vae.search rerun TRIAL [TRIAL ...] [--set KEY=VALUE ...] [--seeds S ...] [--tag TAG]
    python -m fashion_vae.search report [--storage URL] [--out DIR]

``run`` asks Optuna for trials (minimise test iwae_nll, maximise 5-NN accuracy), queues each
as one DVC experiment per seed, runs them with DVC's queue workers and tells Optuna the
median over seeds; running it again resumes the study. ``rerun`` runs finished trials again with
other settings (``--set train.epochs=40``) over 3 seeds and records them in the study. ``report`` writes the Pareto front
(``front.png``, ``front.md``) and every trial's record (``study.json``, ``trials.md``). The space and the
study's settings are in search.yaml; the study lives in ``--storage`` (default: a SQLite
file in search/; ``postgresql+psycopg://...`` for a study shared by several machines).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashion_vae.errors import PipelineError
from fashion_vae.search.storage import DEFAULT_STORAGE


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fashion_vae.search", description=__doc__.split("\n\n")[2])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) the study in search.yaml")
    rerun = commands.add_parser("rerun", help="run finished trials again (full length, more seeds) and record them")
    report = commands.add_parser("report", help="write the Pareto front and every trial's record")
    for sub in (run, rerun, report):
        sub.add_argument("--config", type=Path, default=Path("search.yaml"), help="the search space (search.yaml)")
        sub.add_argument("--storage", default=DEFAULT_STORAGE,
                         help=f"Optuna storage URL (default {DEFAULT_STORAGE}; postgresql+psycopg://... to share)")
    run.add_argument("--trials", type=int, help="trials to finish (default: study.trials)")
    run.add_argument("--jobs", type=int, help="DVC queue workers (default: study.jobs)")
    rerun.add_argument("numbers", type=int, nargs="+", metavar="TRIAL", help="completed trials to run again")
    rerun.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a params.yaml value for every re-run, e.g. train.epochs=40 (repeatable)")
    rerun.add_argument("--seeds", type=int, nargs="+", help="train.seed of each experiment (default: the study's "
                       "seeds and the next ones, 3 in all)")
    rerun.add_argument("--tag", default="full", help="names the re-run: STUDY-tNNN-TAG-sSEED (default full)")
    for sub in (run, rerun):
        sub.add_argument("--push", metavar="REMOTE", help="dvc exp push each finished trial's experiments to this git remote")
        sub.add_argument("--poll", type=float, default=10.0, help="seconds between looks at DVC's queue (default 10)")
    report.add_argument("--out", type=Path, default=Path("search/report"), help="directory to write (default search/report)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from fashion_vae.search import space as search_space

        space = search_space.load(args.config)
        for option in ("trials", "jobs"):
            value = getattr(args, option, None)
            if value is not None and value < 1:
                raise PipelineError(f"--{option} = {value} is invalid; expected an integer >= 1")
        if args.command == "run":
            from fashion_vae.search import driver

            return driver.run(space, args.storage, Path("."), args.trials, args.jobs, args.push, args.poll)
        if args.command == "rerun":
            from fashion_vae.search import rerun

            return rerun.rerun(space, args.storage, Path("."), args.numbers, args.set, args.seeds, args.tag, args.push,
                               args.poll)
        from fashion_vae.search import report
        from fashion_vae.search.storage import open_storage

        record = report.write(open_storage(args.storage), args.storage, space, args.out)
        print(f"search: study {space.name!r}: {record['counts']['complete']} completed, "
              f"{record['counts']['fail']} failed, {record['counts']['running']} running trials, "
              f"{len(record['reruns'])} re-runs; front {', '.join(map(str, record['front'])) or 'empty'}; "
              f"wrote {args.out}/study.json, trials.md, front.md, reruns.md, front.png"
              + (", reruns.png" if report.finished_reruns(record) else ""))
        return 0
    except PipelineError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C) before the study started; nothing was queued", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
