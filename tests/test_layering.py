"""The layering that docs/architecture.md states, checked on every module's imports: a module imports only from its
own layer or below; a command's body (what a shim at the top imports) may also use the sweeps' job helpers."""

from __future__ import annotations

import ast
import re

from helpers import REPO

PACKAGE = "recursive_ae_gan"
ARCHITECTURE = REPO / "docs" / "architecture.md"


def documented_layers() -> dict[str, int]:
    """``{folder or module: layer}``, lowest 0, from the doc's sentence "Layers, lowest first: `a`, `b` < `c` <
    ... < the commands."; the commands (the package root, the shims beside it) are the last layer."""
    text = " ".join(ARCHITECTURE.read_text().split())
    (sentence,) = re.findall(r"Layers, lowest first: (.*?)\. ", text)
    layers = sentence.split(" < ")
    assert layers[-1] == "the commands"
    return {name: rank for rank, layer in enumerate(layers) for name in re.findall(r"`(\w+)`", layer)}


def layer_of(module: str, layers: dict[str, int]) -> int:
    """A module's layer: its folder's (``run.train`` is in ``run``) or its own (``compat``); else a command."""
    return layers.get(module.split(".")[1] if "." in module else "", len(set(layers.values())))


def imports(source: str) -> set[str]:
    """The package's names a module's source imports (``from recursive_ae_gan.x import y``: ``x`` and ``x.y``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        assert not (isinstance(node, ast.ImportFrom) and node.level), "a relative import"  # the package has none
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in names if name.startswith(f"{PACKAGE}.")}


def wrong_imports(sources: dict[str, str], layers: dict[str, int]) -> list[str]:
    """Every import of ``sources`` (``{module: source}``) from a higher layer than the importing module's."""
    top = len(set(layers.values()))
    commands = [module for module in sources if module.count(".") == 1 and layer_of(module, layers) == top]
    bodies = {name for module in commands for name in imports(sources[module])}
    wrong = []
    for module, source in sources.items():
        allowed = max(layer_of(module, layers), layers["sweeps"] if module in bodies else 0)
        wrong += [f"{module} imports {name}" for name in sorted(imports(source)) if layer_of(name, layers) > allowed]
    return wrong


def package_sources() -> dict[str, str]:
    sources = {}
    for path in (REPO / PACKAGE).rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        sources[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path.read_text()
    return sources


def test_every_module_imports_only_from_its_layer_or_below() -> None:
    layers = documented_layers()
    assert layers["core"] == layers["compat"] == 0 and layers["networks"] == 1
    assert layers["sweeps"] == layers["analysis"] == layers["perf"] > layers["run"]
    sources = package_sources()
    assert len(sources) > 50
    assert wrong_imports(sources, layers) == []


def test_an_import_against_the_layering_is_found() -> None:
    layers = documented_layers()
    sources = {
        f"{PACKAGE}.core.console": "from recursive_ae_gan.run import identity",  # core is below run
        f"{PACKAGE}.run.identity": "from recursive_ae_gan.compat import current_target",  # compat is below run
        f"{PACKAGE}.run.train": "import recursive_ae_gan.sweeps.gpus",  # a command's body: may use the sweeps
        f"{PACKAGE}.run.config": "from recursive_ae_gan.analysis import runs",  # not a body: may not
        f"{PACKAGE}.train": "from recursive_ae_gan.run.train import main",  # a shim
    }
    assert wrong_imports(sources, layers) == [
        f"{PACKAGE}.core.console imports {PACKAGE}.run",
        f"{PACKAGE}.core.console imports {PACKAGE}.run.identity",
        f"{PACKAGE}.run.config imports {PACKAGE}.analysis",
        f"{PACKAGE}.run.config imports {PACKAGE}.analysis.runs",
    ]
