"""What every method shares: its options (a dataclass declared in the method's own file, with the
paper's values as defaults), the batch it receives, and the training phases it asks the loop for.

A method is an ``nn.Module`` whose ``forward(batch, generator, epoch)`` returns named losses
(``"loss"`` is the one to minimise). ``batch`` is a dict of tensors on the training device: the
views named in ``inputs`` ``(N, C, T, V, M)``, ``label`` and ``index`` ``(N,)``, and, when
``sequences`` is true, ``sequence`` ``(N, C, L, V, M)`` (the real frames, zero after each
sample's ``length``) and ``length`` ``(N,)``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from skelctl.options import OptionsError, make_options  # noqa: F401 - the methods' options
from skelctl.skeletons import Layout


@dataclass
class Phase:
    """A stretch of training with its own optimiser: epochs, learning-rate schedule (``lr`` times
    ``lr_gamma`` at each of ``lr_steps``, counted from the phase's first epoch; under the run's
    cosine schedule, ``lr`` is the peak of the phase's own warmup and cosine and ``lr_steps``
    is unused), whether the run's gradient clipping applies, and the parameters it trains
    (``parameters(model)`` returns optimiser parameter groups; None: every parameter that
    requires a gradient). The run's betas, schedule and layer-wise decay apply to every phase."""

    epochs: int
    lr: float
    lr_steps: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    name: str = "train"
    parameters: Callable[[nn.Module], list[dict[str, Any]]] | None = None
    clip: bool = True  # whether the run's grad_clip applies in this phase
    optimizer: str | None = None  # sgd, adam or adamw; None: the run's (TrainConfig.optimizer)

    def groups(self, model: nn.Module) -> list[dict[str, Any]]:
        if self.parameters is not None:
            return self.parameters(model)
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def encoder_names(streams: tuple[str, ...] | list[str], kinds: tuple[str, ...] | list[str]
                  ) -> list[str]:
    """The names a run's trained encoders are exported and evaluated under: the stream
    (``joint``) when the run trains one kind of encoder, else stream and kind
    (``joint.bigru``, ``joint.agcn``: ISC trains several on one stream)."""
    if len(kinds) <= 1:
        return list(streams)
    return [f"{stream}.{kind}" for stream in streams for kind in kinds]


def stream_of(name: str) -> str:
    """The stream (input view) of an encoder name from :func:`encoder_names`."""
    return name.split(".", 1)[0]


class EncoderFactory:
    """Fresh encoders of a run's kinds (its ``encoder``: one name, or several for a method that
    trains several kinds, as ISC): ``factory()`` builds the first kind, ``factory(kind)`` the
    named one, each with its own options."""

    def __init__(self, kinds: tuple[str, ...], build: Callable[[str], nn.Module]):
        self.kinds = tuple(kinds)
        self._build = build

    def __call__(self, kind: str | None = None) -> nn.Module:
        kind = kind or self.kinds[0]
        if kind not in self.kinds:
            raise OptionsError(f"encoder {kind!r} is not one of the run's "
                               f"({', '.join(self.kinds)})")
        return self._build(kind)


class Method(nn.Module, metaclass=abc.ABCMeta):
    """Base of the self-supervised methods."""

    Options: type = type("Options", (), {})
    title: str = ""  # the method's name in the papers' tables
    multi_view: bool | None = False  # None: any number of streams
    several_encoders = False  # whether a run may give several encoder kinds (ISC's)
    inputs: tuple[str, ...] = ("joint",)
    sequences = False

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: Callable[[], nn.Module], options: Any):
        super().__init__()  # the settings were checked (skelctl.methods.check_method)
        self.streams = tuple(streams)
        self.layout = layout
        self.options = options

    @abc.abstractmethod
    def encoders(self) -> dict[str, nn.Module]:
        """Every encoder the method trains, by its name from :func:`encoder_names` (the stream,
        or stream and kind), as used downstream (exported at the end of training)."""

    def phases(self, epochs: int, lr: float, lr_steps: list[int], lr_gamma: float,
               momentum: float, weight_decay: float) -> list[Phase]:
        """The run's training settings as phases; one phase unless a method needs more."""
        return [Phase(epochs, lr, list(lr_steps), lr_gamma, momentum, weight_decay)]

    def start_from(self, encoders: dict[str, nn.Module], run: str) -> None:
        """Take ``run``'s trained encoders (by stream) as this run's first step, which
        :meth:`phases` then leaves out. Only a method whose first step another run can train
        takes a start."""
        raise OptionsError(f"{type(self).__name__} has no first step that another run "
                           f"({run!r}) could train")
