"""The packages, computed (pyproject.toml holds the rest): ``conf/`` stays at the top of the repository and ships
as the package ``recursive_ae_gan.conf``, each config group folder one of its packages, so that an install carries
the configs (``recursive_ae_gan.core.console.CONF_DIR`` finds them there)."""

from setuptools import find_namespace_packages, find_packages, setup

CONF = "recursive_ae_gan.conf"

setup(
    packages=[
        *find_packages(include=["recursive_ae_gan", "recursive_ae_gan.*"]),
        "hydra_plugins.recursive_ae_gan",  # the project's Hydra plugins (the Optuna sweeper): Hydra's namespace
        CONF,
        *(f"{CONF}.{group}" for group in find_namespace_packages("conf", exclude=["*__pycache__"])),
    ],
    package_dir={CONF: "conf"},
    package_data={CONF: ["**/*.yaml"]},
)
