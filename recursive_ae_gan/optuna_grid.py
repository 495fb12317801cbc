"""Hydra's Optuna sweeper (``hydra-optuna-sweeper``, the ``sweep`` extra) with a grid study that always ends.

Optuna's ``GridSampler`` calls ``Study.stop()`` once the last grid point is told, which raises outside
``Study.optimize``; the plugin asks and tells its trials itself, and ignores that error for a completed trial
but not for a failed one. So a grid study whose last trial failed ended in a traceback, without
``optimization_results.yaml`` or the sweep's summary line. ``hydra/sweeper=optuna`` is the plugin's sweeper with
:class:`GridEndingSweeperImpl` (the class: ``hydra_plugins/recursive_ae_gan/optuna_sweeper.py``; its config, the
plugin's under the plugin's name: ``recursive_ae_gan.sweeps``): the same grid, built as the plugin builds it, but
from a :class:`GridSampler` that leaves the end of the study to the trial count, the grid's size.

Imported only when a sweep instantiates the sweeper: optuna is optional, and slow to import.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from optuna.trial import FrozenTrial, TrialState


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


class GridEndingSweeperImpl(OptunaSweeperImpl):
    def sweep(self, arguments: list[str]) -> None:
        """The plugin's sweep; a grid sampler (the plugin's ``partial(GridSampler)``) is built here first, from
        the same search space and with the same trial count as the plugin would, as a :class:`GridSampler`."""
        sampler = self.sampler
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            self._process_searchspace_config()
            distributions, _ = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
            distributions = {**(self.search_space_distributions or {}), **distributions}
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = GridSampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(choices) for choices in grid.values()))
        super().sweep(arguments)
