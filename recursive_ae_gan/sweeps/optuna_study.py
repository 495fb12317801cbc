"""Hydra's Optuna sweeper with studies that continue and grid studies that always end (``hydra/sweeper=optuna``).

A run on a stored study (``hydra.sweeper.storage``, ``study_name``) goes on to ``n_trials`` in all: job ``i`` is
the study's trial ``i`` (its own directory), a trial a kill left RUNNING is told FAIL, and the sampler's seed moves
on by the trials held, so a continued study draws new points. A grid study ends even when its last trial fails,
and a continued one runs the points it has not run. Imported only when a sweep instantiates the sweeper (optuna
is optional and slow to import). Why and how: docs/scaling.md, "Optuna".
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.exc import SQLAlchemyError  # optuna's database storage

from recursive_ae_gan.core.errors import UserError, first_line

log = logging.getLogger(__name__)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without the ``Study.stop()`` it calls after the last grid point, and in the grid's
    order: trial (and job) i is grid point i (each parameter's values sorted, as Optuna's grid holds them), so a
    re-run numbers its jobs alike. Optuna picks unvisited points at random, to spread parallel workers over a
    shared study; this sweeper asks for its trials itself."""

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        return sorted(super()._get_unvisited_grid_ids(study))[:1]  # the first unvisited: random.choice of one

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """Nothing: the sweeper's trial count, the grid's size, ends the study."""


class StudySweeperImpl(OptunaSweeperImpl):
    """The plugin's sweeper, continuing a stored study and ending every grid study (module docstring)."""

    def sweep(self, arguments: list[str]) -> None:
        """The plugin's sweep, for the trials the study still lacks, with a sampler seeded for them.

        A grid sampler (the plugin's ``partial(GridSampler)``) is built here first, from the same search space
        and with the same trial count as the plugin would, as a :class:`GridSampler`.
        """
        sampler = self.sampler
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            self._process_searchspace_config()
            distributions, _ = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
            distributions = {**(self.search_space_distributions or {}), **distributions}
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = GridSampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(choices) for choices in grid.values()))
        held = self._trials_held()
        if held:
            seed = self.config.hydra.sweeper.sampler.get("seed")
            if seed is not None:
                self.sampler = instantiate(self.config.hydra.sweeper.sampler, seed=seed + held)
            more = max(0, self.n_trials - held)
            trials = f"{held} trial" + ("" if held == 1 else "s")
            log.info(
                "study %s already holds %s of n_trials=%d: %s",
                self.study_name,
                trials,
                self.n_trials,
                f"running {more} more" if more else "nothing to run",
            )
            self.n_trials = more
        super().sweep(arguments)

    def _trials_held(self) -> int:
        """How many trials the stored study holds (0 for a new one), once those a killed run left RUNNING are FAIL."""
        if self.storage is None or self.study_name is None:
            return 0  # a study in memory, or one Optuna names anew: a new study
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:  # no such study yet
            return 0
        except SQLAlchemyError as err:  # the first read of the storage: a damaged database file fails here
            raise UserError(
                f"hydra.sweeper.storage={self.storage} cannot be read ({first_line(getattr(err, 'orig', None) or err)}"
                "; a damaged file?): move it away to start the study anew, or give another storage"
            ) from None
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            job = Path(self.sweep_dir) / str(trial.number)
            kept = f"; its job directory {job} is kept as the kill left it" if job.is_dir() else ""
            log.warning(
                "trial %d of study %s was left running by a run that was killed: told FAIL%s",
                trial.number,
                self.study_name,
                kept,
            )
            study.tell(trial.number, state=TrialState.FAIL)
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))

    def _configure_trials(
        self, trials: list[Trial], search_space_distributions: dict[str, BaseDistribution], fixed_params: dict[str, Any]
    ) -> Sequence[Sequence[str]]:
        """The plugin's overrides for a batch of trials, which it launches as jobs ``self.job_idx``, ``+1``, ...:
        set here to the trials' numbers."""
        numbers = [trial.number for trial in trials]
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            raise UserError(
                f"study {self.study_name} gave trials {numbers}, not consecutive numbers: another sweep is adding "
                "trials to it; run one sweep per study at a time"
            )
        self.job_idx = numbers[0]
        return super()._configure_trials(trials, search_space_distributions, fixed_params)
