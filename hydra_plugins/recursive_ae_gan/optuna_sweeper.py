"""``hydra/sweeper=optuna``: the project's Optuna sweeper (config: ``recursive_ae_gan.sweeps.sweeper_config``).

Hydra scans this module with every plugin at every start: Optuna, slow to import and in the ``sweep`` extra, is
imported only when a sweep builds the sweeper (``recursive_ae_gan.sweeps.optuna_study``).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Hydra's side of ``sweeps.optuna_study.StudySweeper``, which does the work."""

    def __init__(self, **settings: Any) -> None:
        try:
            from recursive_ae_gan.sweeps.optuna_study import StudySweeper
        except ModuleNotFoundError as err:
            from recursive_ae_gan.core.errors import UserError

            raise UserError(f"hydra/sweeper=optuna needs {err.name}: pip install -e '.[sweep]'") from None
        self.sweeper = StudySweeper(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.sweeper.sweep(arguments)
