"""``hydra/sweeper=optuna``: the Optuna plugin's sweeper, with studies that continue and grid studies that end
(``recursive_ae_gan.sweeps.optuna_study``).

Hydra scans this module with every plugin; without the ``sweep`` extra it defines nothing.
"""

from __future__ import annotations

from typing import Any

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as PluginOptunaSweeper
except ImportError:  # hydra-optuna-sweeper is not installed
    PluginOptunaSweeper = None

if PluginOptunaSweeper is not None:

    class OptunaSweeper(PluginOptunaSweeper):
        """The plugin's sweeper (same config), sweeping with ``sweeps.optuna_study.StudySweeperImpl``."""

        def __init__(self, **kwargs: Any) -> None:
            from recursive_ae_gan.sweeps.optuna_study import StudySweeperImpl  # imports optuna: only when sweeping

            self.sweeper = StudySweeperImpl(**kwargs)
