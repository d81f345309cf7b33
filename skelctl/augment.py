"""Batched skeleton augmentations, run on the training device.

Every function takes a batch ``(N, C, T, V, M)`` and a ``torch.Generator`` on the batch's device,
draws its randomness per sample in one call, and returns a new batch of the same shape. Methods name
the augmentations they use, with parameters, in an ordered mapping (see :func:`compose`), so a new
method never needs a new augmentation file.

The last section holds PCM3's masking and mixing by body part. They return what the loss reads
besides the batch (the mask, each sample's partner, the partner's share), so a method calls them
directly rather than through a chain.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Literal, Mapping, get_args

import torch

from skelctl.keys import unknown_name
from skelctl.options import (Check, Fraction, OptionsError, check_mapping, check_value,
                             keyword_types)
from skelctl.skeletons import PART_NAMES, Layout

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(shape: tuple[int, ...], low: float, high: float, x: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype) * (high - low) + low


def _chance(p: float, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A per-sample boolean mask shaped to broadcast over ``(N, C, T, V, M)``."""
    draw = torch.rand(x.shape[0], generator=generator, device=x.device)
    return (draw < p).view(-1, 1, 1, 1, 1)


def shear(x: torch.Tensor, generator: torch.Generator, amplitude: float = 0.5) -> torch.Tensor:
    """Multiply the coordinates by ``[[1, a12, a13], [a21, 1, a23], [a31, a32, 1]]``, the six
    shear factors drawn from U(-amplitude, amplitude) per sample (CrosSCLR Eq. 9); for 2D
    keypoints the 2 x 2 matrix with the two factors."""
    n, c = x.shape[:2]
    eye = torch.eye(c, device=x.device, dtype=x.dtype)
    matrix = _uniform((n, c, c), -amplitude, amplitude, x, generator) * (1 - eye) + eye
    return torch.einsum("nij,njtvm->nitvm", matrix, x)


def temporal_crop(x: torch.Tensor, generator: torch.Generator,
                  padding_ratio: int = 6) -> torch.Tensor:
    """Pad ``T // padding_ratio`` frames at each end by reflection (edge frame included), then
    crop T frames from a random start: a random shift of up to that many frames."""
    t = x.shape[2]
    pad = t // padding_ratio
    if pad == 0:
        return x.clone()
    padded = torch.cat([x[:, :, :pad].flip(2), x, x[:, :, t - pad:].flip(2)], dim=2)
    start = torch.randint(0, 2 * pad + 1, (x.shape[0],), generator=generator, device=x.device)
    index = (start[:, None] + torch.arange(t, device=x.device)).view(-1, 1, t, 1, 1)
    return padded.gather(2, index.expand(-1, x.shape[1], -1, x.shape[3], x.shape[4]))


def crop_resize(x: torch.Tensor, generator: torch.Generator, min_ratio: float = 0.1,
                max_ratio: float = 1.0, frames: int | None = None,
                lengths: torch.Tensor | None = None, min_frames: int = 1) -> torch.Tensor:
    """Crop a random segment of ``floor(U(min_ratio, max_ratio) * length)`` frames, but at least
    ``min_frames`` (ISC's code: 64) and at most the sequence's valid length, at a uniform random
    start, and resize it to ``frames`` (default T) by linear interpolation
    (``align_corners=False``): the ISC line's temporal crop-resize.

    ``lengths`` gives each sample's valid frames when the batch is zero-padded.
    """
    valid = _valid_lengths(x, lengths)
    size = torch.floor(valid * _uniform((x.shape[0],), min_ratio, max_ratio, x, generator))
    size = torch.minimum(size.clamp(min=max(min_frames, 1)), valid)
    start = torch.floor(_uniform((x.shape[0],), 0, 1, x, generator) * (valid - size + 1))
    return resize_segments(x, start, size, frames or x.shape[2])


def centre_crop_resize(x: torch.Tensor, ratio: float = 0.95, frames: int | None = None,
                       lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The deterministic counterpart of :func:`crop_resize` for evaluation, ISC's test-time
    centre crop: ``floor((1 - ratio) * length / 2)`` frames off each end (its
    ``int((1 - p) * n / 2)``), the rest resized to ``frames``."""
    n = _valid_lengths(x, lengths).double()  # exact, as ISC's int(...)
    start = torch.floor((1 - ratio) * n / 2)
    return resize_segments(x, start.to(x.dtype), (n - 2 * start).to(x.dtype),
                           frames or x.shape[2])


def _valid_lengths(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[2], device=x.device, dtype=x.dtype)
    return lengths.to(device=x.device, dtype=x.dtype)


def resize_segments(x: torch.Tensor, start: torch.Tensor, size: torch.Tensor,
                    frames: int) -> torch.Tensor:
    """Frames ``start .. start + size - 1`` of each sample resampled to ``frames`` by linear
    interpolation with ``align_corners=False`` (edge frames held)."""
    n, c, _, v, m = x.shape
    pos = (torch.arange(frames, device=x.device, dtype=x.dtype)[None] + 0.5) * size[:, None] \
        / frames - 0.5
    pos = start[:, None] + torch.minimum(pos.clamp(min=0), size[:, None] - 1)
    low = pos.floor().long()
    high = torch.minimum(low + 1, (start + size - 1).long()[:, None])
    weight = (pos - low).view(n, 1, frames, 1, 1)

    def take(index: torch.Tensor) -> torch.Tensor:
        return x.gather(2, index.view(n, 1, frames, 1, 1).expand(-1, c, -1, v, m))

    return take(low) * (1 - weight) + take(high) * weight


def joint_jitter(x: torch.Tensor, generator: torch.Generator, joints: int = 5,
                 std: float = 0.02) -> torch.Tensor:
    """Gaussian noise on ``joints`` randomly chosen joints per sample, the same ones in every
    frame (a local corruption, as the ISC line's joint perturbation)."""
    n, _, _, v, _ = x.shape
    chosen = torch.rand((n, v), generator=generator, device=x.device).argsort(dim=1)[:, :joints]
    mask = torch.zeros((n, v), device=x.device, dtype=x.dtype).scatter_(1, chosen, 1.0)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * std
    return x + noise * mask.view(n, 1, 1, v, 1)


def joint_corruption(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.6,
                     p_zero: float = 0.5) -> torch.Tensor:
    """ISC's joint corruption: ``round(fraction * V)`` joints chosen per sample (ISC: 15 of 25),
    the same in every frame and body; with probability ``p_zero`` their coordinates are zeroed,
    else multiplied by a random C x C matrix with every entry from U(-1, 1)."""
    n, c, _, v, _ = x.shape
    count = max(1, min(v, round(fraction * v)))
    chosen = torch.rand((n, v), generator=generator, device=x.device).argsort(dim=1)[:, :count]
    mask = torch.zeros((n, v), device=x.device, dtype=torch.bool).scatter_(1, chosen, True)
    matrix = _uniform((n, c, c), -1, 1, x, generator)
    zeroed = _chance(p_zero, x, generator)
    corrupted = torch.where(zeroed, torch.zeros_like(x),
                            torch.einsum("nij,njtvm->nitvm", matrix, x))
    return torch.where(mask.view(n, 1, 1, v, 1), corrupted, x)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` rotations ``Rz @ Ry @ Rx`` for angles ``(N, 3)`` about x, y, z (radians)."""
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def stack(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rx = stack([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    ry = stack([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    rz = stack([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def rotate(x: torch.Tensor, generator: torch.Generator, max_degrees: float = 30.0,
           minor_degrees: float = 1.0, symmetric: bool = False, sign: float = 1.0
           ) -> torch.Tensor:
    """AimCLR's random rotation: one random main axis by U(0, max_degrees), the other two by
    U(0, minor_degrees). ``symmetric``: angles from U(-limit, limit) instead (CRRL Table IX:
    every axis U(-45, 45) degrees with ``max_degrees = minor_degrees = 45``). 2D keypoints turn
    in the image plane by the angle drawn for z.

    ``sign`` +1 turns by the right-hand rule (the rotation the papers describe); -1 turns the other
    way, as AimCLR's code does: its matrices are the transposes of the standard ones, and with
    angles drawn from U(0, 30) rather than a symmetric range the direction matters."""
    n = x.shape[0]
    main = torch.randint(0, 3, (n,), generator=generator, device=x.device)
    limit = torch.full((n, 3), minor_degrees, device=x.device, dtype=x.dtype)
    limit[torch.arange(n, device=x.device), main] = max_degrees
    low = -1 if symmetric else 0
    angles = _uniform((n, 3), low, 1, x, generator) * limit * (math.pi / 180) * sign
    if x.shape[1] == 2:
        matrix = rotation_matrices(angles * torch.tensor([0.0, 0.0, 1.0], device=x.device,
                                                         dtype=x.dtype))[:, :2, :2]
    else:
        matrix = rotation_matrices(angles)
    return torch.einsum("nij,njtvm->nitvm", matrix, x)


def flip(x: torch.Tensor, generator: torch.Generator, layout: Layout,
         p: Fraction = 0.5) -> torch.Tensor:
    """Swap left and right joints (the layout's mirror permutation) with probability p."""
    mirrored = x[:, :, :, list(layout.flip)]
    return torch.where(_chance(p, x, generator), mirrored, x)


def gaussian_noise(x: torch.Tensor, generator: torch.Generator, std: float = 0.01,
                   p: Fraction = 0.5) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * std
    return torch.where(_chance(p, x, generator), x + noise, x)


def gaussian_blur(x: torch.Tensor, generator: torch.Generator, kernel: int = 15,
                  sigma: tuple[float, float] = (0.1, 2.0), p: Fraction = 0.5,
                  normalised: bool = True) -> torch.Tensor:
    """Temporal Gaussian smoothing with a per-sample sigma ~ U(sigma), edges replicated.

    ``normalised``: the kernel sums to 1, a smoothing that keeps the amplitude (a Gaussian blur as
    the AimCLR paper names it). AimCLR's code uses the raw ``exp(-x^2 / 2 sigma^2)`` values, whose
    sum is about ``sigma * sqrt(2 pi)``: its "blur" also scales the coordinates by 1 to 5 with
    sigma; ``normalised: false`` reproduces that."""
    n, c, t, v, m = x.shape
    radius = kernel // 2
    s = _uniform((n, 1), sigma[0], sigma[1], x, generator)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)[None]
    weights = torch.exp(-offsets ** 2 / (2 * s ** 2))  # (N, K)
    if normalised:
        weights = weights / weights.sum(dim=1, keepdim=True)
    padded = torch.cat([x[:, :, :1].expand(-1, -1, radius, -1, -1), x,
                        x[:, :, -1:].expand(-1, -1, radius, -1, -1)], dim=2)
    windows = padded.unfold(2, kernel, 1)  # (N, C, T, V, M, K)
    blurred = torch.einsum("nctvmk,nk->nctvm", windows, weights)
    return torch.where(_chance(p, x, generator), blurred, x)


def axis_mask(x: torch.Tensor, generator: torch.Generator, p: Fraction = 0.5) -> torch.Tensor:
    """Zero one random coordinate axis (x, y or z) of the whole sample, with probability p."""
    n, c = x.shape[:2]
    axis = torch.randint(0, c, (n,), generator=generator, device=x.device)
    keep = torch.ones((n, c), device=x.device, dtype=x.dtype)
    keep[torch.arange(n, device=x.device), axis] = 0
    masked = x * keep.view(n, c, 1, 1, 1)
    return torch.where(_chance(p, x, generator), masked, x)


def time_flip(x: torch.Tensor, generator: torch.Generator, p: Fraction = 0.5) -> torch.Tensor:
    """Play the sequence backwards with probability p (AimCLR's ``random_time_flip``, in its code
    but not in its default chain)."""
    return torch.where(_chance(p, x, generator), x.flip(2), x)


AUGMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "shear": shear, "crop": temporal_crop, "crop_resize": crop_resize, "jitter": joint_jitter,
    "rotate": rotate, "flip": flip, "noise": gaussian_noise, "blur": gaussian_blur,
    "axis_mask": axis_mask, "time_flip": time_flip, "corrupt": joint_corruption,
}


def crop_and_shear() -> dict[str, dict[str, object]]:
    """CrosSCLR's augmentations in their order: temporal crop (padding ratio 6), shear 0.5."""
    return {"crop": {"padding_ratio": 6}, "shear": {"amplitude": 0.5}}


def aimclr_extreme() -> dict[str, dict[str, object]]:
    """AimCLR's extreme augmentations in its order: the normal ones (crop, shear), then spatial
    flip (p 0.5), rotation (always: one axis by U(0, 30) degrees, the others by U(0, 1)),
    Gaussian noise (std 0.01, p 0.5), temporal Gaussian blur (kernel 15, sigma U(0.1, 2), p 0.5)
    and axis mask (p 0.5)."""
    return {**crop_and_shear(), "flip": {"p": 0.5},
            "rotate": {"max_degrees": 30.0, "minor_degrees": 1.0},
            "noise": {"std": 0.01, "p": 0.5},
            "blur": {"kernel": 15, "sigma": [0.1, 2.0], "p": 0.5}, "axis_mask": {"p": 0.5}}


def isc_augmentations() -> dict[str, dict[str, object]]:
    """ISC's per-view chain (its code): temporal crop-resize (length ratio U(0.1, 1), at least
    64 frames, to 64 frames), then with p 0.5 shear with off-diagonals U(-1, 1), else joint
    corruption (15 of 25 joints)."""
    return {"crop_resize": {"min_ratio": 0.1, "max_ratio": 1.0, "frames": 64, "min_frames": 64},
            "either": {"p": 0.5, "first": {"shear": {"amplitude": 1.0}},
                       "second": {"corrupt": {"fraction": 0.6, "p_zero": 0.5}}}}


def check_chain(spec: Any, where: str) -> None:
    """An augmentation chain's names and each one's options by type (its function's keywords),
    ``either``'s probability and its two chains too; OptionsError naming ``where`` and the key."""
    check_value(spec, dict[str, Any], where)
    for name, options in spec.items():
        if name == "either":
            types = {"p": Fraction, "first": AugmentChain, "second": AugmentChain}
            values = check_mapping(options, types, f"{where}.either")
            if not {"first", "second"} <= set(values):
                raise OptionsError(f"{where}.either: takes first and second (chains) and p")
        elif name in AUGMENTATIONS:
            check_mapping(options, keyword_types(AUGMENTATIONS[name], skip=AUGMENT_INPUTS),
                          f"{where}.{name}")
        else:
            raise OptionsError(unknown_name("augmentation", name, [*AUGMENTATIONS, "either"],
                                            where))


# an augmentation chain as options give it: augmentation name -> its options, checked
AugmentChain = Annotated[dict[str, Any], Check(check_chain)]
AUGMENT_INPUTS = ("x", "generator", "layout", "lengths")


def compose(spec: Mapping[str, Mapping[str, object]], layout: Layout) -> Augmentation:
    """Chain augmentations in the given order, e.g. ``{"crop": {"padding_ratio": 6},
    "shear": {"amplitude": 0.5}}`` (CrosSCLR's order: crop, then shear).

    ``"either": {"p": P, "first": CHAIN, "second": CHAIN}`` applies the first chain to each sample
    with probability P and the second to the others (ISC: shear, else joint corruption). The
    returned function takes ``lengths``, each sample's valid frames in a zero-padded batch, which
    ``crop_resize`` reads (after it every frame is valid)."""
    check_chain(dict(spec), "augmentations")
    if "flip" in spec and len(layout.flip) != layout.num_joints:
        raise OptionsError(f"augmentations.flip: layout {layout.name!r} names no left/right "
                           f"joints to swap (a layout file's mirror pairs)")
    steps: list[tuple[Callable[..., torch.Tensor], dict[str, object]]] = []
    for name, options in spec.items():
        options = dict(options or {})
        if name == "either":
            options = {"p": float(options.get("p", 0.5)),
                       "first": compose(options["first"], layout),
                       "second": compose(options["second"], layout)}
            steps.append((_either, options))
        else:
            steps.append((AUGMENTATIONS[name], options))

    def apply(x: torch.Tensor, generator: torch.Generator,
              lengths: torch.Tensor | None = None) -> torch.Tensor:
        for function, options in steps:
            if function is flip:
                options = {**options, "layout": layout}
            if function is crop_resize:
                options, lengths = {**options, "lengths": lengths}, None
            x = function(x, generator, **options)
        return x

    return apply


def _either(x: torch.Tensor, generator: torch.Generator, p: float, first: Augmentation,
            second: Augmentation) -> torch.Tensor:
    """Per sample, ``first(x)`` with probability p, else ``second(x)`` (both drawn in full, so
    the draws do not depend on which samples take which)."""
    chosen = _chance(p, x, generator)
    return torch.where(chosen, first(x, generator), second(x, generator))


# --- masking and mixing by body part (PCM3) --------------------------------------------------

Mix = Literal["cutmix", "resizemix", "mixup"]
MIXES: tuple[str, ...] = get_args(Mix)


def body_part_matrix(layout: Layout) -> torch.Tensor:
    """``(5, V)`` boolean: which joints each of the layout's five body parts holds (trunk, left
    arm, right arm, left leg, right leg), the parts :func:`body_part_mask` and
    :func:`mix_with_rolled_batch` draw from."""
    missing = [p for p in PART_NAMES if p not in layout.parts]
    if missing:
        raise OptionsError(f"masking and mixing by body part need the five body parts; layout "
                           f"{layout.name!r} does not name {', '.join(missing)}: give its layout "
                           f"file a 'parts' entry listing each part's joints")
    matrix = torch.zeros(len(PART_NAMES), layout.num_joints, dtype=torch.bool)
    for row, part in enumerate(PART_NAMES):
        matrix[row, list(layout.parts[part])] = True
    return matrix


def body_part_mask(parts: torch.Tensor, samples: int, frames: int, per_chunk: int,
                   chunk_frames: int, generator: torch.Generator) -> torch.Tensor:
    """Topology-based masking (PCM3 Sec. 3.2): ``(samples, frames, V)``, true where masked. The
    frames fall into chunks of ``chunk_frames`` (the last may be shorter); in each chunk
    ``per_chunk`` of the parts (rows of ``parts``, ``(P, V)``) are drawn without replacement, and
    all their joints are masked in all the chunk's frames. PCM3 draws one mask (``samples=1``)
    for the whole batch."""
    count, device = parts.shape[0], parts.device
    chunks = -(-frames // chunk_frames)
    order = torch.rand((samples, chunks, count), generator=generator, device=device).argsort(-1)
    chosen = torch.zeros((samples, chunks, count), device=device).scatter_(
        2, order[..., :per_chunk], 1.0)
    cells = (chosen @ parts.to(chosen.dtype)) > 0  # (samples, chunks, V)
    return cells[:, torch.arange(frames, device=device) // chunk_frames]


def random_cell_mask(samples: int, frames: int, joints: int, ratio: float,
                     generator: torch.Generator, device: torch.device | str = "cpu"
                     ) -> torch.Tensor:
    """Random masking (the baseline of PCM3's Table 10): ``(samples, frames, V)``, true at
    ``round(ratio * frames * V)`` (frame, joint) cells drawn uniformly without replacement."""
    cells = frames * joints
    order = torch.rand((samples, cells), generator=generator, device=device).argsort(-1)
    mask = torch.zeros((samples, cells), dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :round(ratio * cells)], True)
    return mask.view(samples, frames, joints)


def mask_first_body(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` ``(N, C, T, V, M)`` zeroed where the ``(N or 1, T, V)`` mask is true, in the first
    body only (PCM3's code: a second body stays visible), and that mask as ``(N, C, T, V, M)``."""
    full = torch.zeros_like(x, dtype=torch.bool)
    full[..., 0] = mask[:, None]
    return x.masked_fill(full, 0.0), full


def mix_with_rolled_batch(x: torch.Tensor, generator: torch.Generator, parts: torch.Tensor,
                          part_range: tuple[int, int] = (2, 3),
                          chunk_range: tuple[int, int] = (7, 11), chunk_frames: int = 4,
                          chances: Mapping[str, float] | None = None, kind: Mix | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCM3's mix (Sec. 3.1): the batch mixed with itself rolled by a random offset in
    ``[1, N - 2]`` (each sample's partner), one draw for the whole batch. Returns the mixed
    batch, the partner of each sample ``(N,)`` and lambda, the partner's share (a 0-d tensor).

    - ``cutmix``: a region of ``part_range`` parts (rows of ``parts``; all their joints, every
      body) x ``chunk_range`` consecutive chunks of ``chunk_frames`` frames is the partner's;
      lambda is the fraction of (frame x joint) cells swapped.
    - ``resizemix``: the same region, holding the partner's first ``2 x`` region-length frames
      (at most all of them) nearest-resized to the region's length.
    - ``mixup``: ``(1 - lambda) x + lambda x_partner``, lambda from U(0, 1).

    ``kind`` forces one; otherwise it is drawn with ``chances`` (CutMix 0.5, ResizeMix 0.25,
    Mixup 0.25 by default)."""
    n, _, t, v, _ = x.shape
    device = x.device
    chances = chances or {"cutmix": 0.5, "resizemix": 0.25, "mixup": 0.25}
    if kind is None:
        weights = torch.tensor([float(chances.get(k, 0.0)) for k in MIXES], device=device)
        kind = MIXES[int(torch.multinomial(weights, 1, generator=generator).item())]
    shift = int(torch.randint(1, max(n - 1, 2), (1,), generator=generator, device=device).item())
    partner = (torch.arange(n, device=device) + shift) % n
    if kind == "mixup":
        lam = torch.rand((), generator=generator, device=device, dtype=x.dtype)
        return (1 - lam) * x + lam * x[partner], partner, lam
    low, high = part_range
    count = int(torch.randint(low, high + 1, (1,), generator=generator, device=device).item())
    chosen = torch.randperm(parts.shape[0], generator=generator, device=device)[:count]
    joints = parts.to(device)[chosen].any(dim=0)  # (V,)
    chunks = t // chunk_frames
    length = min(int(torch.randint(chunk_range[0], chunk_range[1] + 1, (1,),
                                   generator=generator, device=device).item()), chunks)
    start = int(torch.randint(0, chunks - length + 1, (1,), generator=generator,
                              device=device).item()) * chunk_frames
    frames = length * chunk_frames
    source = x[partner]
    if kind == "resizemix":
        # the partner's first 2 x frames, nearest-resized (floor(i * in / out)) to the region
        taken = min(2 * frames, t)
        index = torch.arange(frames, device=device) * taken // frames
        source = torch.zeros_like(x).index_copy_(2, torch.arange(start, start + frames,
                                                                 device=device),
                                                 source[:, :, index])
    region = torch.zeros((t, v), dtype=torch.bool, device=device)
    region[start:start + frames] = joints
    mixed = torch.where(region[None, None, :, :, None], source, x)
    return mixed, partner, region.to(x.dtype).mean()
