"""One training run's life: the config check, continuation, checkpoints, atomic writes, loggers, callbacks,
the console, and ``train`` itself."""
