"""``hydra/sweeper=optuna``: the Optuna plugin's sweeper config, stored under the plugin's name, for the sweeper
whose studies continue and whose grids end (``hydra_plugins/recursive_ae_gan/optuna_sweeper.py``,
``sweeps.optuna_study``). Registered on import (by ``run.train``); without the ``sweep`` extra it does nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins

if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper"):  # the `sweep` extra
    # Hydra's plugin scan (once per process) runs every plugin's module, and the Optuna plugin's stores its
    # configs: scan first, so that the config below replaces the plugin's, not the other way round.
    Plugins.instance()
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf

    from hydra_plugins.recursive_ae_gan.optuna_sweeper import OptunaSweeper

    Plugins.instance().register(OptunaSweeper)  # the scan may not see an editable install's hydra_plugins

    @dataclasses.dataclass
    class StudyOptunaSweeperConf(OptunaSweeperConf):
        """``hydra/sweeper=optuna``: the plugin's settings, for the sweeper whose studies continue and grids end."""

        _target_: str = f"{OptunaSweeper.__module__}.{OptunaSweeper.__name__}"

    ConfigStore.instance().store(
        group="hydra/sweeper", name="optuna", node=StudyOptunaSweeperConf, provider="recursive_ae_gan"
    )
