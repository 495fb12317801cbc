"""The project's Hydra plugins: Hydra instantiates a sweeper or launcher only from the ``hydra_plugins`` package."""
