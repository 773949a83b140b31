"""The search driver: Optuna asks, DVC's queue trains, Optuna is told.

Each asked trial becomes one DVC experiment per seed (``dvc exp run --queue -n
STUDY-tNNN-sSEED -S key=value ...``), run by DVC's own queue workers. When all of a trial's
experiments are done, their metrics are read back through DVC (``dvc exp show --json``)
and the median over seeds of each objective is told to Optuna; a failed experiment fails
its trial, with its error line kept, and the study goes on.

Resuming is running the same command again: trials this workspace left running (the
driver was killed, the database went away) are adopted, their finished experiments read,
never trained again, and only missing ones queued. Ctrl-C removes this driver's queued
experiments, stops the ones running, marks their trials failed and keeps everything
finished. Suggestions depend only on the study's results and ``sampler_seed``: the
sampler is re-seeded from the number of trials before every ask.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fashion_vae import atomic, params
from fashion_vae.errors import PipelineError
from fashion_vae.search import experiments as exps
from fashion_vae.search.scores import medians, seed_objectives
from fashion_vae.search.space import OBJECTIVES, SEED_KEY, SearchSpace
from fashion_vae.search.storage import STATE_DIR, quiet_optuna, safe_url, sqlite_path, storage_errors

# Trial user attributes (the study's own record of each trial).
WORKSPACE = "workspace"  # host:path of the driver that runs the trial
EXPERIMENTS = "experiments"  # seed -> DVC experiment name
PER_SEED = "per_seed"  # seed -> objectives and the experiment's rev
ERROR = "error"
INTERRUPTED = "interrupted"
DEFINITION = "definition"  # study attribute: what a trial means (space, seeds, fixed values)
RECHECK_S = 300  # asks DVC at least this often, whatever its files say
ORPHAN_POLLS = 3  # looks in a row at a "Running" experiment whose run is gone before it is queued again
ORPHAN_S = 30  # ... and seconds, while a queue worker lives that may still be collecting its results
REMOVE_TRIES, REMOVE_WAIT_S = 3, 5  # removals of a killed task that DVC still lists, and the wait between
STOP_ROUNDS = 3  # looks at the queue on Ctrl-C until none of this driver's experiments is queued or running
# Changes the workspace may hold that every trial's baseline may include: pipeline results.
RESULT_FILES = ("dvc.lock", "metrics/")


def machine_description() -> str:
    """The CPU model and core count, for the study's record of where each trial ran."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def workspace_id(root: Path) -> str:
    return f"{socket.gethostname()}:{root.resolve()}"


def experiment_name(space: SearchSpace, number: int, seed: int) -> str:
    return f"{space.name}-t{number:03d}-s{seed}"


def finished(trial) -> bool:
    """Counts towards the study's trials: completed, or failed on its own (not interrupted)."""
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED))


@dataclass
class InFlight:
    """A trial this driver runs: its experiments by seed, and what each has given."""

    trial: object  # optuna.trial.Trial
    names: dict[int, str]
    values: dict  # the params.yaml values every seed's experiment gets (train.seed aside)
    results: dict[int, dict] = field(default_factory=dict)
    error: str | None = None


class Driver:
    def __init__(self, space: SearchSpace, storage_url: str, root: Path, queue: exps.Queue,
                 trials: int | None = None, jobs: int | None = None, push: str | None = None,
                 poll_s: float = 10.0, log=print):
        self.space, self.storage_url, self.root, self.queue = space, storage_url, root, queue
        self.target = trials or space.trials
        self.jobs = jobs or space.jobs
        self.push, self.poll_s, self.log = push, poll_s, log
        self.me = workspace_id(root)
        self.in_flight: list[InFlight] = []
        self.suspects: dict[str, tuple[float, int]] = {}  # name -> (first seen dead, looks in a row)
        self.last_activity: tuple | None = None
        self.last_look = 0.0

    # -- the study ----------------------------------------------------------------------------

    def open_study(self, storage):
        optuna = quiet_optuna()
        directions = [direction for _, _, direction in OBJECTIVES]
        try:
            study = optuna.create_study(study_name=self.space.name, storage=storage, directions=directions,
                                        load_if_exists=True)
        except ValueError as err:  # an existing study with other directions
            raise PipelineError(f"study {self.space.name!r}: {err}") from None
        definition = {
            "space": {d.key: {"kind": d.kind, "low": d.low, "high": d.high, "choices": list(d.choices)}
                      for d in self.space.dimensions},
            "seeds": list(self.space.seeds),
            "fixed": self.space.fixed,
            "targets": list(self.space.targets),
        }
        stored = study.user_attrs.get(DEFINITION)
        if stored is None:
            study.set_user_attr(DEFINITION, definition)
            study.set_user_attr("search_yaml", self.space.text)
            default = self.space.default_trial(params.load())
            if default is not None:  # the current params.yaml first, measured like every trial
                study.enqueue_trial(default, user_attrs={"default": True}, skip_if_exists=True)
        elif stored != definition:
            raise PipelineError(
                f"search.yaml: its space, seeds or fixed values differ from those study {self.space.name!r} "
                "began with; give study.name a new name to start another study"
            )
        command = " ".join(safe_url(arg) if "://" in arg else arg for arg in sys.argv)  # never a password
        started = {"workspace": self.me, "machine": machine_description(), "command": command,
                   "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        study.set_user_attr("drivers", [*study.user_attrs.get("drivers", []), started])
        return study

    def ask(self, study) -> InFlight:
        optuna = quiet_optuna()
        # Re-seeded from the number of trials: the same results give the same suggestion, in
        # any process (an Optuna sampler's random state lives only in the process that made it).
        study.sampler = optuna.samplers.TPESampler(
            seed=self.space.sampler_seed + len(study.get_trials(deepcopy=False)),
            n_startup_trials=self.space.startup_trials, multivariate=True, constant_liar=True,
        )
        trial = study.ask(self.space.distributions())
        names = {seed: experiment_name(self.space, trial.number, seed) for seed in self.space.seeds}
        trial.set_user_attr(WORKSPACE, self.me)
        trial.set_user_attr("machine", machine_description())
        trial.set_user_attr(EXPERIMENTS, {str(seed): name for seed, name in names.items()})
        flight = InFlight(trial, names, self.space.params_of(trial.params))
        self.queue_missing(flight, {}, {})  # a new trial number: none of its names can be queued yet
        self.log(f"search: trial {trial.number}: {self.describe(trial.params)} -> {', '.join(names.values())}")
        return flight

    def adopt(self, study) -> None:
        """Trials this workspace left running: read what finished, queue what is missing."""
        from optuna.trial import TrialState

        mine = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.user_attrs.get(WORKSPACE) == self.me]
        if not mine:
            return
        states = self.queue.status()
        theirs = [n for t in mine for n in t.user_attrs[EXPERIMENTS].values()]
        done = self.queue.experiments(expect=[n for n in theirs if states.get(n) == exps.SUCCESS])
        for frozen in mine:
            trial = optuna_trial(study, frozen)
            names = {int(seed): name for seed, name in frozen.user_attrs[EXPERIMENTS].items()}
            flight = InFlight(trial, names, self.space.params_of(frozen.params))
            self.queue_missing(flight, states, done)
            self.in_flight.append(flight)
            self.log(f"search: resuming trial {frozen.number} ({len(flight.results)} of {len(names)} "
                     "experiments already finished)")

    def queue_missing(self, flight: InFlight, states: dict[str, str], done: dict[str, dict]) -> None:
        """Read the trial's finished experiments; queue those DVC has neither finished nor queued."""
        for seed, name in flight.names.items():
            if name in done:
                flight.results[seed] = done[name]
            elif name not in states:  # DVC's queue knows nothing of it: never queued, or dropped
                self.queue.enqueue(name, {**flight.values, SEED_KEY: seed}, self.space.targets)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, storage) -> int:
        study = self.open_study(storage)
        self.adopt(study)
        try:
            while True:
                trials = study.get_trials(deepcopy=False)
                done = sum(finished(t) for t in trials)
                mine = {f.trial.number for f in self.in_flight}
                elsewhere = sum(t.state.name == "RUNNING" and t.number not in mine for t in trials)
                # Enough trials in flight to keep every queue worker busy, none beyond the target.
                while (len(self.in_flight) * len(self.space.seeds) < self.jobs or not self.in_flight) \
                        and done + elsewhere + len(self.in_flight) < self.target:
                    self.in_flight.append(self.ask(study))
                if not self.in_flight:
                    break
                self.step(study)
                if self.in_flight:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            return self.interrupted(study)
        except storage_errors() as err:
            from fashion_vae.search.storage import one_line

            raise PipelineError(
                f"lost the study's database {safe_url(self.storage_url)} ({one_line(err)}); every finished "
                f"trial and experiment is kept, and running this command again resumes the study"
            ) from None
        trials = study.get_trials(deepcopy=False)
        self.log(f"search: study {self.space.name!r} has {sum(finished(t) for t in trials)} finished trials "
                 f"({sum(t.state.name == 'COMPLETE' for t in trials)} completed); "
                 f"python -m fashion_vae.search report shows the front")
        return 0

    def step(self, study) -> None:
        """Tell Optuna about every trial whose experiments are all done; keep the workers going.

        DVC is asked only when its files say something changed, no worker is alive, or
        ``RECHECK_S`` went by: each ``dvc queue status`` costs about a second of CPU, taken
        from the trial that runs meanwhile.
        """
        activity = self.queue.activity()
        alive = activity[-1]  # queue worker processes that live
        if activity == self.last_activity and alive and time.monotonic() - self.last_look < RECHECK_S:
            return
        self.last_activity, self.last_look = activity, time.monotonic()
        states = self.queue.status()
        waiting = [n for f in self.in_flight for s, n in f.names.items() if s not in f.results]
        if any(n not in states for n in waiting):  # its queue record is gone (removed): finished?
            done = self.queue.experiments()
            for flight in self.in_flight:
                flight.results.update({s: done[n] for s, n in flight.names.items() if n in done})
            # Not queued again here: a task DVC has just queued may not show yet, and a name queued
            # twice loses a result. A driver started again queues what is really missing (adopt).
        if self.orphaned(states, waiting, alive):
            states = self.queue.status()
        # Workers leave once the queue is empty, and one can die (see ``orphaned``). Only when none
        # lives: `dvc queue start` does not see a worker still starting and would start a second.
        if not alive and any(states.get(n) == exps.QUEUED for n in waiting):
            self.queue.start_workers(self.jobs)
        ready = [f for f in self.in_flight
                 if all(seed in f.results or states.get(name) in exps.DONE for seed, name in f.names.items())]
        if not ready:
            return
        succeeded = [n for f in ready for s, n in f.names.items() if s not in f.results and states.get(n) == exps.SUCCESS]
        done = self.queue.experiments(expect=succeeded)
        for flight in ready:
            for seed, name in flight.names.items():
                if seed in flight.results:
                    continue
                if name in done:
                    flight.results[seed] = done[name]
                elif flight.error is None:
                    flight.error = f"{name}: {self.queue.error(name)}"
            self.tell(study, flight)
            self.in_flight.remove(flight)

    def remove_killed(self, names: list[str]) -> tuple[list[str], str | None]:
        """Remove just-killed tasks from DVC's queue: (those it still lists, its last refusal).

        Tried ``REMOVE_TRIES`` times: once a queue worker took a task and then shut down (its
        idle monitor stopped it in the same instant) before starting it, the first removal
        after the kill was refused, and the same command a while later succeeded.
        """
        answer = None
        for attempt in range(REMOVE_TRIES):
            if attempt:
                time.sleep(REMOVE_WAIT_S)
            answer = self.queue.remove(names) or answer
            states = self.queue.status()
            names = [n for n in names if n in states]
            if not names:
                return [], None
        return names, answer

    def orphaned(self, states: exps.QueueStatus, waiting: list[str], alive: int) -> bool:
        """Queue again this driver's experiments that DVC lists as running but whose run has died.

        DVC keeps such a task "Running" for ever once its process died with it (the machine
        stopped or was restarted mid-trial): it would block the study. An experiment is taken
        for dead when its ``dvc exp exec-run`` process is gone (or, not yet started, no queue
        worker is alive to start it) at ``ORPHAN_POLLS`` looks in a row, and, while a worker
        lives that might still be collecting its results, for ``ORPHAN_S`` seconds.
        """
        now = time.monotonic()
        dead = set()
        for name in waiting:
            if states.get(name) == exps.RUNNING:
                run = self.queue.run_alive(states.tasks.get(name, "?"))
                if run is False or (run is None and not alive and not states.workers):
                    dead.add(name)
        self.suspects = {name: (since, looks + 1) for name, (since, looks)
                         in {name: self.suspects.get(name, (now, 0)) for name in dead}.items()}
        orphans = [name for name, (since, looks) in self.suspects.items()
                   if looks >= ORPHAN_POLLS and (not alive or now - since >= ORPHAN_S)]
        if not orphans:
            return False
        self.log(f"search: {', '.join(orphans)}: DVC lists it as running but its run has stopped (with its "
                 "machine?); queued again")
        for name in orphans:
            del self.suspects[name]
            self.queue.forget_dead_run(states.tasks[name])  # its pid may be another process's by now
        self.queue.kill(orphans)  # DVC marks a task whose process is gone as failed ...
        stuck, answer = self.remove_killed(orphans)  # ... which can then be removed, and queued anew
        if stuck:
            why = f" (DVC: {answer})" if answer else ""
            raise PipelineError(f"{stuck[0]}: DVC lists it as running with no run alive and would not remove it{why}; "
                                f"run `dvc queue kill {stuck[0]}` and `dvc queue remove {stuck[0]}`, then this "
                                "command again")
        done = self.queue.experiments()  # one that finished just as its machine stopped has its result
        for flight in self.in_flight:
            for seed, name in flight.names.items():
                if name in orphans and name in done:
                    flight.results[seed] = done[name]
                elif name in orphans:
                    self.queue.enqueue(name, {**flight.values, SEED_KEY: seed}, self.space.targets)
        return True

    def tell(self, study, flight: InFlight) -> None:
        from optuna.trial import TrialState

        trial = flight.trial
        per_seed = seed_objectives(flight)
        trial.set_user_attr(PER_SEED, per_seed)
        if flight.error:
            trial.set_user_attr(ERROR, flight.error)
            study.tell(trial, state=TrialState.FAIL)
            self.log(f"search: trial {trial.number} failed: {flight.error}")
            return
        values = medians(per_seed)
        study.tell(trial, values)
        if self.push:
            self.queue.push(self.push, list(flight.names.values()))
        summary = ", ".join(f"{name} {value:.4g}" for (name, _, _), value in zip(OBJECTIVES, values))
        self.log(f"search: trial {trial.number} done: {summary} (median of {len(per_seed)} seeds)")

    def interrupted(self, study) -> int:
        """Ctrl-C: drop queued experiments, stop running ones, fail their trials, keep the rest."""
        import signal

        from optuna.trial import TrialState

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up runs to its end
        removed = self.stop_unfinished()
        for flight in self.in_flight:
            flight.trial.set_user_attr(INTERRUPTED, True)
            flight.trial.set_user_attr(ERROR, "interrupted (Ctrl-C)")
            study.tell(flight.trial, state=TrialState.FAIL, skip_if_finished=True)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        kept = sum(len(t.user_attrs.get(EXPERIMENTS, {})) for t in complete)
        failed = ", ".join(str(f.trial.number) for f in self.in_flight) or "none"
        print(f"error: interrupted (Ctrl-C); kept {len(complete)} completed trials and their {kept} experiments "
              f"in {safe_url(self.storage_url)}; marked trial(s) {failed} failed and removed "
              f"{removed} unfinished experiment(s); run the same command to continue", file=sys.stderr)
        return 130

    def stop_unfinished(self) -> int:
        """Remove this driver's queued experiments and stop its running ones; return how many went.

        Looked at again after each round: a task that was queued when DVC was asked may have been
        started meanwhile (the one before it ended), and is then stopped in the next round."""
        names = [n for f in self.in_flight for s, n in f.names.items() if s not in f.results]
        gone: set[str] = set()
        for attempt in range(STOP_ROUNDS):
            states = self.queue.status()
            queued = [n for n in names if states.get(n) == exps.QUEUED]
            running = [n for n in names if states.get(n) == exps.RUNNING]
            if not queued and not running:
                break
            # Queued ones first: killing a running task with others behind it can leave the next one stuck.
            self.queue.remove(queued)
            self.queue.kill(running)
            if attempt == 0:
                self.queue.stop_workers()
            self.queue.wait_until_stopped(running)
            finished_meanwhile = set(self.queue.experiments()) & set(running)  # ended before the kill landed
            self.queue.remove([n for n in running if n not in finished_meanwhile])
            gone |= set(queued) | (set(running) - finished_meanwhile)
        return len(gone)

    def describe(self, suggested: dict) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.space.params_of(suggested).items())


def optuna_trial(study, frozen):
    """A live ``Trial`` for a stored running trial, so it can be told (Optuna's ask-and-tell)."""
    import optuna

    return optuna.trial.Trial(study, frozen._trial_id)


def check_workspace(queue: exps.Queue) -> str | None:
    """Refuse uncommitted changes that would go into every trial; say so when only results changed."""
    changed = queue.uncommitted()
    code = [path for path in changed if not path.startswith(RESULT_FILES)]
    if code:
        shown = ", ".join(code[:3]) + (f" and {len(code) - 3} more" if len(code) > 3 else "")
        raise PipelineError(
            f"the workspace has uncommitted changes to {shown}; DVC's queue copies the workspace into every "
            "trial, so commit or stash them first"
        )
    if changed:
        return ("search: every trial starts from the last commit plus this workspace's uncommitted pipeline "
                f"results ({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}); no code or params change")
    return None


def run(space: SearchSpace, storage_url: str, root: Path, trials: int | None = None, jobs: int | None = None,
        push: str | None = None, poll_s: float = 10.0) -> int:
    """``python -m fashion_vae.search run``: one driver per workspace (and per SQLite file)."""
    queue = exps.Queue(root)
    with driving(root, storage_url, queue) as storage:
        return Driver(space, storage_url, root, queue, trials, jobs, push, poll_s).run(storage)


@contextlib.contextmanager
def driving(root: Path, storage_url: str, queue: exps.Queue):
    """The storage, opened while this workspace (and a SQLite file elsewhere) has no other driver,
    and after the workspace is checked: one driver per workspace and per SQLite file."""
    from fashion_vae.search.storage import open_storage

    note = check_workspace(queue)
    if note:
        print(note)
    db = sqlite_path(storage_url)
    with contextlib.ExitStack() as locks:
        locks.enter_context(atomic.exclusive_lock(root / STATE_DIR, "another search driver"))
        if db is not None and (root / db).resolve().parent != (root / STATE_DIR).resolve():
            # A SQLite file elsewhere: one driver at a time on it too.
            locks.enter_context(atomic.exclusive_lock((root / db).parent, f"another search driver (on {db})"))
        yield open_storage(storage_url)
