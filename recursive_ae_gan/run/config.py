"""Typed configs: the composed config is checked before any data is loaded or any model built.

The schema of every node with a ``_target_`` is its target's signature: each key must be one of
the target's arguments, and each value must fit the argument's type hint (``int``, ``float``,
``Sequence[float]``, ``Literal[...]``, unions, ``Annotated[str, REGISTRY]``: a key of the registry as it is
when checked, ...). So the schema cannot drift from the code, and a user's own network or callback config
is checked the same way. ``RANGES`` adds the bounds that types cannot say (a learning rate > 0, betas in
[0, 1), ...). The first problem ends the run as one line naming the full key, the value given and what is
expected. A bad value in one job of a sweep fails that job only.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch.accelerators import AcceleratorRegistry
from omegaconf import DictConfig, ListConfig, OmegaConf

from recursive_ae_gan.core.errors import UserError

Check = tuple[Callable[[Any], bool], str]  # (is the value fine, what is expected)


def at_least(low: float) -> Check:
    return (lambda v: v >= low), f">= {low}"


def each(check: Check) -> Check:
    test, expected = check
    return (lambda v: all(test(x) for x in v)), f"each {expected}"


POSITIVE: Check = (lambda v: v > 0), "> 0"
BETA: Check = (lambda v: 0 <= v < 1), "in [0, 1)"
ORDERED_BOUNDS: Check = (lambda v: len(v) == 2 and 0 <= v[0] <= v[1]), "[low, high] with 0 <= low <= high"
ACCELERATORS = sorted(AcceleratorRegistry.available_accelerators() | {"auto", "gpu"})

# Bounds of arguments of the package's own targets (by argument name) and of Lightning's Trainer.
RANGES: dict[str, Check] = {
    "recursion_depth": at_least(0),
    "eval_depth": at_least(0),
    "warmup_epochs": at_least(0),
    "recursion_warmup_epochs": at_least(0),
    "d_translate": at_least(0),
    "lr": POSITIVE,
    "d_lr": POSITIVE,
    "betas": each(BETA),
    "d_betas": each(BETA),
    "adv_weight": at_least(0),
    "target_gain": at_least(0),
    "adv_weight_bounds": ORDERED_BOUNDS,
    "batch_size": at_least(1),
    "train_size": at_least(1),
    "val_size": at_least(1),
    "test_size": at_least(0),
    "image_size": at_least(1),
    "max_memory_gb": POSITIVE,
    "max_image_pixels": at_least(1),
    "num_workers": at_least(0),
    "num_images": at_least(1),
    "divergence_check_every": at_least(1),
    "decay": ((lambda v: 0 <= v <= 1), "in [0, 1]"),
    "step_weights": each(at_least(0)),
    "update_every_n_steps": at_least(1),
    "update_starting_at_step": at_least(0),
    "epochs": at_least(1),
    "max_epochs": at_least(1),
    "min_epochs": at_least(0),
    "patience": at_least(1),
    "val_fraction": ((lambda v: 0 < v < 1), "in (0, 1)"),
}
TRAINER_RANGES: dict[str, Check] = {
    "accelerator": ((lambda v: not isinstance(v, str) or v in ACCELERATORS), f"one of {', '.join(ACCELERATORS)}"),
    "max_epochs": at_least(-1),
    "num_nodes": at_least(1),
    "log_every_n_steps": at_least(1),
}
# The entry config's own keys besides the groups.
TOP_LEVEL: dict[str, Any] = {
    "seed": int,
    "ckpt_path": str | None,
    "rerun_failed": bool,
    "collapse_threshold": float,
    "optimized_metric": str | None,
    "jobs_per_gpu": int,
    "tags": list[str],
    "extras": dict,
}
PATHS: dict[str, Any] = {"data_dir": str, "log_dir": str, "output_dir": str}  # the paths group: folders
EXTRAS: dict[str, Any] = {"print_config": bool}  # run-wide switches, as lightning-hydra-template's extras
GROUPS = ("data", "model", "trainer", "callbacks", "logger", "paths", "realism")


def check(cfg: DictConfig) -> None:
    """Raise a one-line ``UserError`` for the first bad key or value of the entry config ``cfg``."""
    for key in cfg:
        if key in GROUPS:
            continue
        if key not in TOP_LEVEL:
            raise UserError(f"{key} is not a setting{_did_you_mean(key, [*TOP_LEVEL, *GROUPS])}")
        _check_value(cfg[key], TOP_LEVEL[key], key)
    if cfg.collapse_threshold < 0:
        raise UserError(f"collapse_threshold={cfg.collapse_threshold}: expected a number >= 0")
    for group, schema in (("paths", PATHS), ("extras", EXTRAS)):
        for key in cfg.get(group) or {}:
            if key not in schema:
                raise UserError(f"{group}.{key} is not a setting{_did_you_mean(key, list(schema))}")
            _check_value(cfg[group][key], schema[key], f"{group}.{key}")
    for group in ("data", "model", "trainer"):
        check_node(cfg[group], group)
    if cfg.get("realism") is not None:
        check_realism(cfg.realism)
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            check_node(node, f"{group}.{name}")


def check_node(node: DictConfig, key: str) -> None:
    """Check one ``_target_`` node (and the ``_target_`` nodes inside it) against its target's signature."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise UserError(f"{key}={_show(node)} has no _target_: give the class or function it configures")
    try:
        target = get_object(node._target_)
    except Exception as err:  # ImportError, AttributeError, ...: the path does not name an object
        raise UserError(f"{key}._target_={node._target_!r} cannot be imported ({err})") from None
    own = node._target_.startswith("recursive_ae_gan.")
    parameters, hints, open_ended = arguments(target, own)
    ranges = RANGES if own else TRAINER_RANGES if node._target_.endswith("Trainer") else {}
    for name in node:
        full = f"{key}.{name}"
        if name.startswith("_") and name.endswith("_"):
            continue
        if name not in parameters:
            if open_ended:
                continue
            raise UserError(f"{full} is not an argument of {node._target_}{_did_you_mean(name, list(parameters))}")
        if OmegaConf.is_missing(node, name):
            continue
        value = node[name]
        if isinstance(value, DictConfig) and "_target_" in value:
            check_node(value, full)
            continue
        if isinstance(value, ListConfig):  # e.g. trainer.plugins: a list of _target_ nodes
            for index, item in enumerate(value):
                if isinstance(item, DictConfig) and "_target_" in item:
                    check_node(item, f"{full}[{index}]")
        _check_value(value, hints.get(name, Any), full)
        if name in ranges and value is not None:
            test, expected = ranges[name]
            if not test(value):
                raise UserError(f"{full}={_show(value)}: expected {expected}")


def check_realism(node: DictConfig) -> Any:
    """The ``realism`` config checked like any node, each of its judges too, then built: what ties its settings
    together (``min_epochs`` <= ``max_epochs``, at least one judge) its class checks itself. Returns the built
    config (``models.realism.RealismTest``)."""
    check_node(node, "realism")
    for name, judge in (node.get("judges") or {}).items():
        check_node(judge, f"realism.judges.{name}")
    try:
        return instantiate(node)
    except InstantiationException as err:  # Hydra wraps the class's own one-line error
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def arguments(target: Callable, own: bool) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """A target's named arguments, their type hints, and whether it takes any other keyword (``**kwargs``).

    A class of this package whose ``__init__`` takes ``**kwargs`` passes them on to its parent's: its arguments are
    its own and its parent's (``AdversarialAutoencoder`` takes ``RecursiveAutoencoder``'s)."""
    parameters: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    for cls in target.__mro__ if inspect.isclass(target) else [target]:
        function = cls.__init__ if inspect.isclass(target) else cls
        signature = inspect.signature(cls)  # a class's: its constructor's arguments, without self
        named = {n: p for n, p in signature.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        parameters |= {n: p for n, p in named.items() if n not in parameters}
        try:
            hints = typing.get_type_hints(function, include_extras=True) | hints  # Annotated kept
        except Exception:  # a third-party annotation that does not resolve: check names only
            pass
        open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if not (open_ended and own):
            return parameters, hints, open_ended
    return parameters, hints, open_ended


def _check_value(value: Any, hint: Any, key: str) -> None:
    if not _fits(value, hint):
        raise UserError(f"{key}={_show(value)}: expected {_expected(hint)}")


def _show(value: Any) -> str:
    return repr(OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value fits a type hint; hints it cannot judge (classes, callables) pass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if origin is typing.Annotated:  # a key of the registry it names, as it is now; the base type first (hashable)
        return _fits(value, args[0]) and all(value in choices for choices in _registries(hint))
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if isinstance(container, type) and issubclass(container, Mapping):
        return isinstance(value, DictConfig | dict)
    if isinstance(container, type) and issubclass(container, Sequence) and container is not str:
        if not isinstance(value, ListConfig | list):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_fits(v, args[0]) for v in value)
    return True


def _registries(hint: Any) -> list[Mapping]:
    """The registries an ``Annotated`` hint names (``Annotated[str, BALANCE_POLICIES]``: one of its keys), read at
    check time, so that an entry added after import is a valid choice."""
    return [meta for meta in hint.__metadata__ if isinstance(meta, Mapping)]


def _expected(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        names = [name for choices in _registries(hint) for name in choices]
        return "one of " + ", ".join(names) if names else _expected(args[0])
    if origin in (typing.Union, types.UnionType):
        literals = [a for arg in args if typing.get_origin(arg) is typing.Literal for a in typing.get_args(arg)]
        others = [_expected(arg) for arg in args if typing.get_origin(arg) is not typing.Literal]
        choices = [f"one of {', '.join(dict.fromkeys(str(a) for a in literals))}"] if literals else []
        return " or ".join(dict.fromkeys(choices + others))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    container = origin or hint
    if isinstance(container, type) and issubclass(container, Mapping):
        return "a mapping"
    if args:
        return f"a list of {_expected(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return "a list"


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
