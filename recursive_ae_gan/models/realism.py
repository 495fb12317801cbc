"""Can a panel of fresh judges tell? Realism per recursion step, by classifier two-sample tests (Lopez-Paz & Oquab,
2017) and the 1-nearest-neighbour two-sample test (Xu et al., 2018).

After the autoencoder is fixed, each trained judge of the panel (``realism.judges``: images -> one logit) learns
from scratch, for each step i, to tell real images from step-i reconstructions. The training images are split,
seeded and by index, into the judge's fit part and a held-out validation part; each epoch shows every fit image once,
as itself or as its reconstruction, drawn anew each epoch. The judge trains until its validation accuracy has not
improved for ``patience`` epochs, but never fewer than ``min_epochs`` (a judge sits at chance for tens of epochs
before it finds what gives reconstructions away: docs/results.md, "Realism") and never more than ``max_epochs``
(reaching it: not converged). Its best-validation weights are scored on the test images, each shown once, as itself
or as its reconstruction (a seeded 50/50 draw), so the scored examples are independent. The 1-NN test has nothing to
train: it classifies each shown test image by its nearest other shown test image. Reconstructions are quantized to
8 bits, as the real images are, so that no judge can win on off-grid pixel values.

Per judge and step: the test accuracy with its 95% Wilson interval, the ROC AUC, the one-sided p-value of the
accuracy against chance (binomial; the 1-NN test's by permutation) and, for a trained judge, its epochs, best epoch
and best validation accuracy. The step's verdict is the strongest judge's (the highest test accuracy), its p-value
Holm-corrected over the panel. ``evaluate`` runs the panel by default, a training run with ``realism=default``.
Docs: docs/evaluation.md, "Realism".
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from scipy.stats import binomtest
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models.autoencoder import NetSpec, adam, build

CONFIDENCE = 0.95
NEAREST_NEIGHBOUR = "nn"  # the 1-NN test's name among the judges
PERMUTATIONS = 9_999  # label permutations behind the 1-NN test's p-value
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealismTest:
    """The ``realism`` config: the panel's trained judges (network configs, by name), whether the 1-NN test joins
    them, and how a judge trains (``conf/realism/``)."""

    judges: dict[str, NetSpec] = field(default_factory=dict)
    nearest_neighbour: bool = True
    max_epochs: int = 300  # the bound: a judge that reaches it is flagged as not converged
    min_epochs: int = 60  # no early stop before: the judge must first leave the chance plateau
    patience: int = 20  # epochs without a better validation accuracy before the judge stops
    val_fraction: float = 0.15  # of the training images, held out to pick the judge's best epoch
    batch_size: int = 256
    lr: float = 1e-3  # Adam
    bf16: bool = True  # autocast the judge to bfloat16 (faster on CPUs and GPUs that have it)
    seed: int = 0  # the split, each judge's weights, its draws of real or reconstructed, the test's assignment
    epochs: int | None = None  # deprecated: a fixed number of epochs (min_epochs = max_epochs = epochs)
    judge: NetSpec | None = None  # deprecated: ``realism/judge=X`` (the one judge before the panel) sets judges.conv

    def __post_init__(self) -> None:
        if self.judge is not None:
            warnings.warn(
                f"realism/judge=X is deprecated (here X builds {self.judge.get('_target_')}): the single judge before "
                "the panel now takes the panel's conv judge's place; write realism/judge@realism.judges.conv=X",
                DeprecationWarning, stacklevel=2,  # this module: core.console shows it
            )  # fmt: skip
            object.__setattr__(self, "judges", {**self.judges, "conv": self.judge})
        if self.epochs is not None:
            warnings.warn(
                f"realism.epochs={self.epochs} is deprecated: it sets realism.min_epochs=realism.max_epochs="
                f"{self.epochs}, a judge of fixed length; give those (or leave them: the judge then trains to "
                "convergence)", DeprecationWarning, stacklevel=2,  # this module: core.console shows it
            )  # fmt: skip
            object.__setattr__(self, "min_epochs", self.epochs)
            object.__setattr__(self, "max_epochs", self.epochs)
        if self.min_epochs > self.max_epochs:
            raise UserError(
                f"realism.min_epochs={self.min_epochs} is above realism.max_epochs={self.max_epochs}; lower it"
            )
        if not self.judges and not self.nearest_neighbour:
            raise UserError("realism has no judge: give realism.judges or realism.nearest_neighbour=true")
        if NEAREST_NEIGHBOUR in self.judges:
            raise UserError(f"realism.judges.{NEAREST_NEIGHBOUR}: that name is the 1-NN test's; rename the judge")


@dataclass(frozen=True)
class Verdict:
    """How well a judge told one step's reconstructions from real test images."""

    accuracy: float
    low: float  # the accuracy's 95% Wilson interval
    high: float
    auc: float
    p_value: float  # one-sided: the judge does better than chance
    n: int  # test examples scored

    def metrics(self, step: int, name: str = "") -> dict[str, float]:
        """``test/step_i/judge_*`` (the step's verdict) or ``test/step_i/judge_NAME_*`` (one judge's), as
        metrics.json and eval.json key them."""
        values = {"acc": self.accuracy, "acc_low": self.low, "acc_high": self.high, "auc": self.auc, "p": self.p_value}
        prefix = f"judge_{name}_" if name else "judge_"
        return {step_key("test", step, prefix + key): value for key, value in values.items()}


@dataclass(frozen=True)
class Training:
    """How a trained judge's training went: its epochs, its best epoch (1-based) and that epoch's validation
    accuracy, and whether it stopped on its own (False: it reached ``max_epochs``)."""

    epochs: int
    best_epoch: int
    val_accuracy: float
    converged: bool

    def metrics(self, step: int, name: str) -> dict[str, float]:
        values = {"epochs": self.epochs, "best_epoch": self.best_epoch, "val_acc": self.val_accuracy}
        values["converged"] = float(self.converged)
        return {step_key("test", step, f"judge_{name}_{key}"): float(value) for key, value in values.items()}


def verdict(logits: torch.Tensor, fake: torch.Tensor) -> Verdict:
    """A judge's test logits ``(N,)`` (above 0: real) against which examples were reconstructions ``(N,)``."""
    n = len(fake)
    correct = int(((logits <= 0) == fake).sum())
    low, high = binomtest(correct, n).proportion_ci(CONFIDENCE, method="wilson")
    p_value = binomtest(correct, n, 0.5, alternative="greater").pvalue
    auc = float(binary_auroc(logits.float(), (~fake).long()))  # reals are the positives
    return Verdict(correct / n, float(low), float(high), auc, float(p_value), n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (each <= 1), in the order given: the i-th smallest p is multiplied by the
    number of hypotheses not yet rejected, and an adjusted p never falls below a smaller p's."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def panel_verdict(verdicts: Mapping[str, Verdict]) -> tuple[str, Verdict]:
    """The step's verdict: the strongest judge (the highest test accuracy; the first named on a tie) with its
    p-value Holm-corrected over the panel."""
    names = list(verdicts)
    adjusted = dict(zip(names, holm([verdicts[name].p_value for name in names]), strict=True))
    strongest = max(names, key=lambda name: verdicts[name].accuracy)
    return strongest, replace(verdicts[strongest], p_value=adjusted[strongest])


def shown_as_fake(n: int, seed: int) -> torch.Tensor:
    """Which of ``n`` images are shown as their reconstruction ``(n,)`` bool: half of them (rounded down), seeded."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fake = torch.zeros(n, dtype=torch.bool)
    fake[order[: n // 2]] = True
    return fake


def pick(real: torch.Tensor, fake_version: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Each image as itself or as its reconstruction: ``fake_version[j]`` where ``fake[j]``, else ``real[j]``."""
    return torch.where(fake.view(-1, *[1] * (real.dim() - 1)).to(real.device), fake_version, real)


def split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images' indices ``0..n-1``, seeded: (the judge's fit part, its validation part), disjoint, at
    least one image in each."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    return order[n_val:].sort().values, order[:n_val].sort().values


@torch.no_grad()
def quantized_steps(model: nn.Module, images: torch.Tensor, depth: int, batch_size: int = 256) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` images -> their reconstructions at steps 0..depth, quantized to 8 bits like real images:
    uint8 ``(depth + 1, N, C, H, W)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    steps = []
    for batch in images.split(batch_size):
        x = batch.to(device).float().div_(255)
        steps.append(model(x, depth).float().mul(255).round().clamp(0, 255).to(torch.uint8).cpu())
    model.train(was_training)
    return torch.cat(steps, dim=1)


class Judge:
    """A judge network with how it reads images: uint8 in, one logit per image out, channels-last (the convs'
    faster layout on CPUs) and, where ``bf16``, autocast to bfloat16."""

    def __init__(self, net: nn.Module, device: torch.device, bf16: bool) -> None:
        self.net = net.to(device, memory_format=torch.channels_last)
        self.device, self.bf16 = device, bf16

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float().div_(255).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x).float()  # (B,) logits

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        self.net.eval()
        found = torch.cat([self(batch) for batch in images.split(batch_size)])
        self.net.train()
        return found


def train_judge(judge: Judge, fit: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                test_cfg: RealismTest) -> Training:  # fmt: skip
    """Train ``judge`` on ``fit`` = (real, reconstructed) images with BCE and Adam, one pass over them per epoch,
    each image as itself or as its reconstruction drawn anew each epoch; keep the weights of its best validation
    accuracy on ``val`` (each image shown once, a fixed draw), stopping early by ``test_cfg``'s rule.

    A plain loop: the images are small tensors already in memory, so a framework's per-batch work would cost more
    than it saves. The validation accuracy is read once per epoch (one host sync per epoch on a GPU)."""
    n = len(fit[0])
    generator = torch.Generator().manual_seed(test_cfg.seed)
    optimizer = adam(judge.net.parameters(), test_cfg.lr, (0.9, 0.999))
    val_fake = shown_as_fake(len(val[0]), test_cfg.seed + 1)
    val_shown, val_target = pick(*val, val_fake), val_fake.to(judge.device)
    best_accuracy, best_epoch, best_state = -1.0, 0, {}
    epoch = 0
    while epoch < test_cfg.max_epochs:
        epoch += 1
        fake = shown_as_fake(n, test_cfg.seed * 1_000_003 + epoch)
        shown, real = pick(*fit, fake), (~fake).float().to(judge.device)
        order = torch.randperm(n, generator=generator).to(judge.device)  # on a GPU: one copy an epoch, not a batch
        for batch in order.split(test_cfg.batch_size):
            loss = nn.functional.binary_cross_entropy_with_logits(judge(shown[batch]), real[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        accuracy = float(((judge.logits(val_shown) <= 0) == val_target).float().mean())
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = copy.deepcopy(judge.net.state_dict())
        if epoch >= test_cfg.min_epochs and epoch - best_epoch >= test_cfg.patience:
            break
    judge.net.load_state_dict(best_state)
    converged = epoch >= test_cfg.min_epochs and epoch - best_epoch >= test_cfg.patience
    return Training(epoch, best_epoch, best_accuracy, converged)


def judge_step(spec: NetSpec, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
               test_cfg: RealismTest, device: torch.device | str = "cpu") -> tuple[Verdict, Training]:  # fmt: skip
    """Train a fresh judge built from ``spec`` on ``train`` = (real, reconstructed) training images (its fit part;
    the rest validates), score its best-validation weights on ``test`` = (real, reconstructed) test images, each
    test image shown once as one or the other."""
    device = torch.device(device)
    fit_index, val_index = split(len(train[0]), test_cfg.val_fraction, test_cfg.seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(test_cfg.seed)  # the judge's initial weights
        judge = Judge(build(spec, list(train[0].shape[1:])), device, test_cfg.bf16)
    on_device = [images.to(device) for images in train]
    training = train_judge(judge, tuple(x[fit_index.to(device)] for x in on_device),
                           tuple(x[val_index.to(device)] for x in on_device), test_cfg)  # fmt: skip
    fake = shown_as_fake(len(test[0]), test_cfg.seed)
    return verdict(judge.logits(pick(*test, fake)).cpu(), fake), training


def nearest_neighbour_step(test: tuple[torch.Tensor, torch.Tensor], seed: int,
                           device: torch.device | str = "cpu") -> Verdict:  # fmt: skip
    """The 1-NN two-sample test on ``test`` = (real, reconstructed) test images, each shown once as one or the other
    (the same draw as the trained judges'): each shown image is called real when its nearest other shown image
    (Euclidean, in pixels) is real. Its logit is (distance to the nearest fake) - (distance to the nearest real).
    The leave-one-out calls are not independent, so the p-value is by permutation: the neighbours do not depend on
    the labels, so permuting the labels ``PERMUTATIONS`` times gives the accuracy's distribution under chance."""
    fake = shown_as_fake(len(test[0]), seed)
    shown = pick(*test, fake).to(device).flatten(1).float().div_(255)
    distances = torch.cdist(shown, shown).fill_diagonal_(float("inf"))
    labels = fake.to(device)
    nearest_fake = distances[:, labels].min(dim=1).values
    nearest_real = distances[:, ~labels].min(dim=1).values
    found = verdict((nearest_fake - nearest_real).cpu(), fake)
    neighbour = distances.argmin(dim=1)
    generator = torch.Generator().manual_seed(seed)
    permuted = torch.stack([fake[torch.randperm(len(fake), generator=generator)] for _ in range(PERMUTATIONS)])
    null = (permuted == permuted[:, neighbour.cpu()]).float().mean(dim=1)  # each permutation's 1-NN accuracy
    p_value = (1 + int((null >= found.accuracy).sum())) / (1 + PERMUTATIONS)
    return replace(found, p_value=p_value)


def realism(
    model: nn.Module, train_images: torch.Tensor, test_images: torch.Tensor, depth: int, test_cfg: RealismTest,
    accelerator: str = "cpu",
) -> dict[str, Any]:  # fmt: skip
    """The panel's two-sample tests of steps 0..depth on uint8 images ``(N, C, H, W)``: per step the verdict
    ``test/step_i/judge_{acc,acc_low,acc_high,auc,p}`` (the strongest judge's, p Holm-corrected over the panel) and
    ``test/step_i/judge_converged`` (1: every trained judge stopped on its own), and per judge ``judge_NAME_*`` (its
    own p uncorrected; a trained judge's also ``epochs``, ``best_epoch``, ``val_acc`` and ``converged``)."""
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    with torch.random.fork_rng(devices=[]):  # a stochastic decoder's draws: seeded, the caller's stream untouched
        torch.manual_seed(test_cfg.seed)
        train_steps = quantized_steps(model, train_images, depth)
        test_steps = quantized_steps(model, test_images, depth)
    metrics: dict[str, Any] = {}
    for step in range(depth + 1):
        verdicts: dict[str, Verdict] = {}
        converged = True
        for name, spec in test_cfg.judges.items():
            found, training = judge_step(spec, (train_images, train_steps[step]), (test_images, test_steps[step]),
                                         test_cfg, device)  # fmt: skip
            log.info(
                "judge %s, step %d: %d epochs (best %d, validation %.3f%s), test accuracy %.3f", name, step,
                training.epochs, training.best_epoch, training.val_accuracy,
                "" if training.converged else ", NOT CONVERGED", found.accuracy,
            )  # fmt: skip
            verdicts[name] = found
            converged &= training.converged
            metrics |= training.metrics(step, name)
        if test_cfg.nearest_neighbour:
            verdicts[NEAREST_NEIGHBOUR] = nearest_neighbour_step((test_images, test_steps[step]), test_cfg.seed, device)
        for name, found in verdicts.items():
            metrics |= found.metrics(step, name)
        metrics |= panel_verdict(verdicts)[1].metrics(step)
        metrics[step_key("test", step, "judge_converged")] = float(converged)
    return metrics
