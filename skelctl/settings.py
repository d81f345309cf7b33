"""The library's settings: a run's training settings, the linear probe's and ISC's crops.

Torch-free, so that a params file is checked (``stages/sections.py`` builds its sections on
these classes) before torch is loaded; these classes are the one home of their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from skelctl.options import (Beta, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                             Range)

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Crop:
    """The crop protocol's settings: ISC's are the defaults. ``train`` None: no random crops
    (KNN, whose training features come from the centre crop too)."""

    train: tuple[float, float] | None = (0.5, 1.0)
    test: float = 0.95
    frames: int = 64
    min_frames: int = 64  # ISC's code: a training crop keeps at least 64 frames (or all)

    def __post_init__(self) -> None:
        if self.train is not None:
            low, high = (self.train if isinstance(self.train, (list, tuple))
                         and len(self.train) == 2 else (None, None))
            if not (_number(low) and _number(high) and 0 < low <= high <= 1):
                raise ValueError(f"train must be [low, high] with 0 < low <= high <= 1, not "
                                 f"{self.train!r}")
            object.__setattr__(self, "train", (float(low), float(high)))
        if not (_number(self.test) and 0 < self.test <= 1):
            raise ValueError(f"test must be a ratio in (0, 1], not {self.test!r}")
        for name in ("frames", "min_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")

    def label(self) -> str:
        """The settings in words, for the metrics' ``protocol``."""
        if self.train is None:
            return f"centre {self.test:g} -> {self.frames} for train and test"
        low, high = self.train
        return f"crop [{low:g}, {high:g}] -> {self.frames}, centre {self.test:g} at test"

    def random(self, sequence: torch.Tensor, length: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        """A random crop of each zero-padded sequence ``(N, C, L, V, M)`` (``length`` valid
        frames each), resized to ``(N, C, frames, V, M)``."""
        if self.train is None:
            raise ValueError("these crop settings have no random training crop (train: null)")
        from skelctl.augment import crop_resize  # torch: this module is read without it

        low, high = self.train
        return crop_resize(sequence, generator, low, high, self.frames, length, self.min_frames)

    def centre(self, sequence: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """The centre crop of each zero-padded sequence, resized to ``frames``."""
        from skelctl.augment import centre_crop_resize

        return centre_crop_resize(sequence, self.test, self.frames, length)


@dataclass
class LinearConfig:
    """The linear probe (CrosSCLR's protocol: SGD, lr 3.0 dropped x0.1 at epoch 80 of 100)."""

    epochs: PositiveInt = 100
    lr: PositiveFloat = 3.0
    momentum: NonNegativeFloat = 0.9
    nesterov: bool = False  # CRRL's evaluation code uses Nesterov momentum
    weight_decay: NonNegativeFloat = 0.0
    batch_size: PositiveInt = 128
    lr_steps: list[PositiveInt] = field(default_factory=lambda: [80])
    lr_gamma: PositiveFloat = 0.1
    # step: x lr_gamma at each of lr_steps, per epoch; cosine: per step, half a cosine from lr
    # down to 0 (MAMP's probe)
    lr_schedule: Literal["step", "cosine"] = "step"
    seed: int = 0
    standardise: bool = False  # batch norm without affine parameters before the linear layer
    init_std: PositiveFloat = 0.02  # the head's initial weights N(0, init_std) (ISC's: 0.01)
    crop: Crop | None = None  # ISC's protocol: features of fresh random crops every epoch


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


OPTIMIZERS = ("sgd", "adam", "adamw")


def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return name


@dataclass
class TrainConfig:
    """A run's training settings (``train`` in a run entry); a method turns the optimiser part
    into its phases."""

    epochs: PositiveInt = 300
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 1e-4
    lr_steps: list[PositiveInt] = field(default_factory=lambda: [250])
    lr_gamma: PositiveFloat = 0.1
    checkpoint_every: PositiveInt = 10
    seed: int = 0
    amp: bool = False  # bf16 autocast on CPU, fp16 autocast + loss scaling on CUDA
    grad_clip: PositiveFloat | None = None  # the gradients' largest total norm (None: not clipped)
    knn_every: NonNegativeInt = 0  # KNN on the split's test part every so many epochs (0: never)
    device: str = "auto"
    # sgd (momentum, weight decay), adam (lr and weight decay only; ISC's fine-tuning) or adamw
    # (decoupled weight decay, none on parameters of fewer than 2 dimensions: MAMP's); a phase
    # may name its own
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    # adam/adamw's moment decays; None: (0.9, 0.999) for adam (torch's), (0.9, 0.95) for adamw
    betas: tuple[Beta, Beta] | None = None
    # step: x lr_gamma at each of lr_steps, per epoch; cosine: per optimiser step, a linear
    # warmup from 0 over warmup_epochs, then half a cosine from lr down to min_lr
    lr_schedule: Literal["step", "cosine"] = "step"
    warmup_epochs: NonNegativeInt = 0
    min_lr: NonNegativeFloat = 0.0
    # layer-wise lr decay (None: off): an encoder's layer i of n trains at lr x decay ** (n - i)
    layer_decay: Annotated[float, Range(0, 1, low_open=True)] | None = None

    def __post_init__(self) -> None:  # params are checked by type; this guards library callers
        check_optimizer(self.optimizer)
        if self.betas is not None:
            if self.optimizer == "sgd":
                raise ValueError("betas are adam's and adamw's; optimizer is sgd")
            self.betas = (float(self.betas[0]), float(self.betas[1]))  # YAML gives a list
        if self.layer_decay == 1.0:  # every layer at lr: no decay, one identity for "off"
            self.layer_decay = None
        if self.lr_schedule == "step" and (self.warmup_epochs or self.min_lr):
            raise ValueError("warmup_epochs and min_lr belong to the cosine schedule; set "
                             "lr_schedule: cosine (the step schedule uses lr_steps and "
                             "lr_gamma)")
        if self.lr_schedule == "cosine" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} leaves none of the "
                             f"{self.epochs} epochs to the cosine")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr:g} is above lr {self.lr:g}: the cosine "
                             f"schedule falls from lr to min_lr")

    def schedule(self) -> dict[str, Any]:
        """The arguments of :meth:`Method.phases`."""
        return {k: getattr(self, k) for k in ("epochs", "lr", "lr_steps", "lr_gamma", "momentum",
                                              "weight_decay")}
