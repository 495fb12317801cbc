"""The project's Optuna sweeper (``hydra/sweeper=optuna``, on Optuna >= 4): Hydra's sweep grammar in, Optuna's
ask-and-tell out, one job per trial.

What it adds to Optuna and Hydra: the study lives in a storage every job reaches (by default the journal file
``<sweep dir>/optuna.journal``), so a job reports its validations to its trial and a pruner can stop it
(``sweeps.trial``); a re-run goes on to ``n_trials`` in all, job ``i`` being trial ``i`` in ``<sweep dir>/i``,
with the sampler's seed moved on by the trials held; each trial is told what its job's ``metrics.json`` says
(ok: COMPLETE, pruned: PRUNED, failed or collapsed: FAIL; a job another process trains: not told, left to it);
a grid study ends after its last point; a search without a completed trial ends without a best one. Why and
how: docs/scaling.md, "Optuna".
"""

from __future__ import annotations

import functools
import json
import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.exc import SQLAlchemyError  # optuna's database storage

from recursive_ae_gan.core.errors import UserError, first_line
from recursive_ae_gan.core.records import Damaged, read_json
from recursive_ae_gan.sweeps.summary import job_status, objective

log = logging.getLogger(__name__)

JOURNAL = "optuna.journal"  # the default storage, in the sweep directory
STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}  # as logged
RUN_DIR = "run_dir"  # the user attribute of a trial naming its job's directory (the dashboard shows it)


def storage_address(storage: str | None, sweep_dir: str | Path) -> str:
    """``hydra.sweeper.storage``: a database URL as is, else a journal file; null: ``<sweep dir>/optuna.journal``."""
    return str(Path(sweep_dir) / JOURNAL) if storage is None else str(storage)


def study_name_of(study_name: str | None, sweep_dir: str | Path) -> str:
    """``hydra.sweeper.study_name``; null: the sweep directory's name (a fixed ``hydra.sweep.dir`` continues)."""
    return study_name if study_name is not None else Path(sweep_dir).name


def open_storage(address: str) -> optuna.storages.BaseStorage:
    """The storage at ``address`` (``storage_address``), read once: a damaged file is one line naming it."""
    try:
        if "://" in address:
            return optuna.storages.RDBStorage(address)
        Path(address).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(address))
    except (SQLAlchemyError, ValueError) as err:  # a damaged database; a journal line that is not JSON
        raise UserError(
            f"hydra.sweeper.storage={address} cannot be read ({first_line(getattr(err, 'orig', None) or err)}"
            "; a damaged file?): move it away to start the study anew, or give another storage"
        ) from None


def distribution(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of one sweep override (hydra-optuna-sweeper's grammar): ``choice(...)`` and a
    shuffled ``range`` are categorical, ``range(a, b, step)`` a stepped int or float, ``interval(a, b)`` a
    uniform int or float, log-uniform when tagged ``log``; a plain override is a fixed value (its string)."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(float(value.start), float(value.stop), step=float(value.step))
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise UserError(f"{override.input_line}: not a sweep the Optuna sweeper takes (choice, range, interval)")


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str], list[str]]:
    """The overrides' distributions, fixed values, and deletions (``~key``, passed to every job as is)."""
    distributions, fixed, deletions = {}, {}, []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_delete():
            deletions.append(override.input_line)
            continue
        value = distribution(override)
        target = distributions if isinstance(value, BaseDistribution) else fixed
        target[override.get_key_element()] = value
    for name in fixed:  # a fixed value on the command line replaces the config's search over it
        distributions.pop(name, None)
    return distributions, fixed, deletions


def grid_points(name: str, d: BaseDistribution) -> list[Any]:
    """A discrete distribution's points, for the grid sampler (a stepped range without its end, as Hydra's)."""
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    if isinstance(d, IntDistribution | FloatDistribution) and d.step is not None and not d.log:
        return [d.low + i * d.step for i in range(int((d.high - d.low) // d.step))]
    raise UserError(f"hydra/sweeper/sampler=grid takes choice(...) and range(...) parameters, not {name}")


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without the ``Study.stop()`` it calls after the last point, which raises outside
    ``Study.optimize``: the sweeper's trial count, the grid's size, ends the study. Trial i is grid point i
    (Optuna's order, shuffled by ``seed``), so a continued grid study runs the points it has not run."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        """Nothing: the sweeper ends the study."""


class StudySweeper(Sweeper):
    """``hydra/sweeper=optuna`` (module docstring); the settings are ``sweeper_config.OptunaSweeperConf``'s."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
        pruner: optuna.pruners.BasePruner | None,
    ) -> None:
        directions = (
            list(direction) if isinstance(direction, list | tuple) or OmegaConf.is_list(direction) else [direction]
        )
        if len(directions) != 1 or str(directions[0]) not in ("minimize", "maximize"):
            raise UserError(
                f"hydra.sweeper.direction={direction}: minimize or maximize (a job returns one value, optimized_metric)"
            )
        if not 0.0 <= max_failure_rate <= 1.0:
            raise UserError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: a share, from 0.0 to 1.0")
        if n_trials < 1 or n_jobs < 1:
            raise UserError(f"hydra.sweeper.n_trials={n_trials}, n_jobs={n_jobs}: both at least 1")
        self.sampler, self.direction, self.storage, self.study_name = sampler, str(directions[0]), storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = params
        self.extend: Callable[[DictConfig, Trial], None] | None = (
            get_method(custom_search_space) if custom_search_space else None
        )
        self.pruner = pruner or optuna.pruners.NopPruner()  # Optuna's own default would be the median pruner

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def sweep(self, arguments: list[str]) -> None:
        params = [f"{name}={value}" for name, value in (self.params or {}).items()]
        distributions, fixed, deletions = search_space([*params, *arguments])
        sampler, n_trials = self.sampler, self.n_trials
        grid = isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler
        if grid:
            points = {name: grid_points(name, d) for name, d in distributions.items()}
            sampler = GridSampler(points, **sampler.keywords)
            n_trials = min(n_trials, math.prod(len(p) for p in points.values()))
        name = study_name_of(self.study_name, self.sweep_dir)
        address = storage_address(self.storage, self.sweep_dir)
        study = optuna.create_study(
            study_name=name,
            storage=open_storage(address),
            sampler=sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard names the value by
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([self.metric])
        held = self._settle(study)
        seed = None if grid else self.config.hydra.sweeper.sampler.get("seed")
        if held and seed is not None:  # a continued study draws new points, and the same commands the same ones
            study.sampler = instantiate(self.config.hydra.sweeper.sampler, seed=seed + held)
        more = max(0, n_trials - held)
        if held:
            run = f"running {more} more" if more else "nothing to run"
            log.info(
                "study %s already holds %d trial%s of n_trials=%d: %s",
                name,
                held,
                "" if held == 1 else "s",
                n_trials,
                run,
            )
        else:
            log.info("study %s: a new study in %s, %d trials", name, address, n_trials)
        while more > 0:
            trials = [study.ask(distributions) for _ in range(min(self.n_jobs, more))]
            numbers = [trial.number for trial in trials]
            if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
                raise UserError(
                    f"study {name} gave trials {numbers}, not consecutive numbers: another sweep is adding trials "
                    "to it; run one sweep per study at a time"
                )
            overrides = [self._overrides(trial, fixed, deletions) for trial in trials]
            self.launcher.launch(overrides, initial_job_idx=numbers[0])
            told = [self._tell(study, trial.number) for trial in trials]
            more -= len(trials)
            failed = told.count(TrialState.FAIL)
            if failed / len(trials) > self.max_failure_rate:
                log.error(
                    "%d of %d trials failed, more than max_failure_rate=%s: the search stops",
                    failed,
                    len(trials),
                    self.max_failure_rate,
                )
                break
        self._results(study)

    @property
    def metric(self) -> str:
        return self.config.get("optimized_metric") or "score"

    def _overrides(self, trial: Trial, fixed: dict[str, str], deletions: list[str]) -> list[str]:
        """The job's overrides: the trial's parameters, the fixed values (also user attributes, as the Hydra
        plugin records them) and the deletions; its directory goes into the study for the dashboard."""
        for key, value in fixed.items():
            trial.set_user_attr(key, value)
        if self.extend is not None:
            self.extend(self.config, trial)
        if overlap := trial.params.keys() & fixed.keys():
            raise UserError(f"{', '.join(sorted(overlap))}: both searched and fixed")
        trial.set_user_attr(RUN_DIR, str(self.sweep_dir / str(trial.number)))
        return [*(f"{key}={value}" for key, value in {**trial.params, **fixed}.items()), *deletions]

    def _outcome(self, number: int) -> tuple[TrialState, float | None] | None:
        """What trial ``number``'s job directory says: its state and value, or None while another process trains
        it (its owner finishes it: a later run of the search tells the study)."""
        job = self.sweep_dir / str(number)
        status = job_status(job)
        if status == "running":
            return None
        if status == "pruned":
            return TrialState.PRUNED, None
        if status == "ok":
            try:
                value = objective(read_json(job / "metrics.json"), self.config.get("optimized_metric"))
            except (UserError, Damaged) as err:
                log.error("trial %d: %s", number, err)
                value = None
            if value is not None:
                return TrialState.COMPLETE, value
        return TrialState.FAIL, None

    def _tell(self, study: optuna.Study, number: int) -> TrialState | None:
        outcome = self._outcome(number)
        if outcome is None:
            log.warning("trial %d of study %s: its job is trained by another process; left running", number,
                        study.study_name)  # fmt: skip
            return None
        state, value = outcome
        if state == TrialState.COMPLETE:
            study.tell(number, value)
        else:
            study.tell(number, state=state)  # a pruned trial's value is its last reported one
        return state

    def _settle(self, study: optuna.Study) -> int:
        """The trials the study holds, once each one an earlier run left RUNNING is told what its job's directory
        says: still trained by another process, it stays RUNNING (and counts); ended, its state; killed, FAIL."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            job = self.sweep_dir / str(trial.number)
            state = self._tell(study, trial.number)
            if state == TrialState.FAIL:
                kept = f"; its job directory {job} is kept as it was left" if job.is_dir() else ""
                log.warning(
                    "trial %d of study %s was left running by a run that was killed: told FAIL%s",
                    trial.number,
                    study.study_name,
                    kept,
                )
            elif state is not None:
                log.info(
                    "trial %d of study %s ended after its run: told %s", trial.number, study.study_name, state.name
                )
        return len(study.get_trials(deepcopy=False))

    def _results(self, study: optuna.Study) -> None:
        """``<sweep dir>/optimization_results.yaml`` (the best trial), or a line saying there is none."""
        counts = Counter(STATES.get(t.state, t.state.name.lower()) for t in study.get_trials(deepcopy=False))
        held = ", ".join(f"{n} {state}" for state, n in counts.items())
        if not counts["complete"]:
            log.error("study %s: no trial completed (%s): no best parameters", study.study_name, held or "none")
            return
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info("study %s (%s): best trial %d, %s=%s, %s", study.study_name, held, best.number, self.metric,
                 best.value, json.dumps(best.params))  # fmt: skip
