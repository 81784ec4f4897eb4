"""Batched augmentation on the training device, equal in distribution to the papers' per-image
torchvision pipelines (reference §5.2):

* ``none``: ToTensor + Normalize (MNIST; every evaluation).
* ``crop_flip``: RandomCrop(size, padding=4) + RandomHorizontalFlip() (CIFAR-10).
* ``crop_flip_rotate``: the same, then RandomRotation(20) (CIFAR-100).

Each sample draws its own crop offsets, flip and angle from the generator passed in, which lives
on the data's device. The geometry runs on raw pixel values, so the crop's zero padding and the
rotation's fill are raw black and become ``-mean/std`` after normalisation, as in the papers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from noisybench.registry import ConfigError

Augment = Callable[[torch.Tensor, "torch.Generator | Sequence[torch.Generator]"], torch.Tensor]

AUGMENTATIONS = ("none", "crop_flip", "crop_flip_rotate")
CROP_PADDING = 4  # RandomCrop(size, padding=4): offsets 0..8 in the zero-padded image
ROTATION_DEGREES = 20.0  # RandomRotation(20): angle ~ U[-20, 20] degrees


@functools.lru_cache(maxsize=None)
def _channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per device so that a CUDA run does not copy the constants to the GPU every batch.
    shape = (1, len(mean), 1, 1)
    return (
        torch.tensor(mean, dtype=torch.float32, device=device).view(shape),
        torch.tensor(std, dtype=torch.float32, device=device).view(shape),
    )


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """ToTensor + Normalize on a batch: ``(x / 255 - mean) / std`` per channel, float32.

    ``x`` holds raw pixel values in [0, 255] (uint8, or float after a geometric transform); the
    operations are torchvision's, in its order, so the values match its pipeline bit for bit.
    """
    mean_t, std_t = _channel_stats(tuple(map(float, mean)), tuple(map(float, std)), x.device)
    return x.to(torch.float32).div(255).sub(mean_t).div(std_t)


def crop_flip(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    padding: int = CROP_PADDING,
) -> torch.Tensor:
    """Crop sample i of the zero-padded batch at (top[i], left[i]) to the input size, then mirror
    it left-right where flip[i]: RandomCrop(padding, fill=0) + HorizontalFlip with given draws.

    The batch is padded once; one gather over each flattened padded plane reads every window,
    its columns reversed where the sample flips.
    """
    batch, channels, height, width = x.shape
    device = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    padded_width = width + 2 * padding
    rows = top[:, None] + torch.arange(height, device=device)  # [B, H]
    cols = torch.arange(width, device=device).expand(batch, width)
    cols = left[:, None] + torch.where(flip[:, None], width - 1 - cols, cols)  # [B, W]
    flat_index = (rows[:, :, None] * padded_width + cols[:, None, :]).view(batch, 1, height * width)
    planes = padded.reshape(batch, channels, -1)
    windows = planes.gather(2, flat_index.expand(batch, channels, height * width))
    return windows.view(batch, channels, height, width)


def draw_crop_flip(
    batch: int, generator: torch.Generator, device: torch.device | str = "cpu", padding: int = CROP_PADDING
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch's crop offsets and flips (top, left, flip), drawn in the one order every caller uses."""
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    return top, left, flip


def draw_rotation(batch: int, generator: torch.Generator, device: torch.device | str = "cpu",
                  degrees: float = ROTATION_DEGREES) -> torch.Tensor:
    """A batch's angles for RandomRotation(degrees): U[-degrees, degrees] per sample."""
    return torch.rand(batch, generator=generator, device=device) * (2 * degrees) - degrees


def _pixel_centres(size: int, device: torch.device) -> torch.Tensor:
    """Centres of ``size`` pixels in grid_sample's [-1, 1] units: (2 * index + 1) / size - 1."""
    return (2 * torch.arange(size, device=device, dtype=torch.float32) + 1) / size - 1


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate sample i by degrees[i] counter-clockwise about the image centre, nearest
    interpolation, raw-black fill; returns float raw pixel values.

    The sampling grid is torchvision's tensor ``rotate``: each output pixel centre, in pixel
    units from the image centre, is rotated back into the input, expressed in grid_sample's
    [-1, 1] coordinates (``align_corners=False``) and nearest-sampled.
    """
    batch, _, height, width = x.shape
    device = x.device
    radians = degrees.to(device=device, dtype=torch.float32) * (math.pi / 180)
    cos, sin = torch.cos(radians)[:, None, None], torch.sin(radians)[:, None, None]
    u = _pixel_centres(width, device)[None, None, :]
    v = _pixel_centres(height, device)[None, :, None]
    # The inverse rotation acts on pixel units, hence the aspect ratios on the cross terms.
    source_u = cos * u - sin * (height / width) * v
    source_v = sin * (width / height) * u + cos * v
    grid = torch.stack([source_u, source_v], dim=-1)  # [B, H, W, 2], (x, y) order
    return F.grid_sample(
        x.to(torch.float32), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )


def build_augment(name: str, mean: Sequence[float], std: Sequence[float]) -> Augment:
    """``fn(x_uint8 [B,C,H,W], generator) -> float32 normalised [B,C,H,W]`` for ``name``.

    With a list of K generators, ``x`` holds K equal parts (the cells of a pack, cell-major) and
    part k draws its crop offsets, flips and angles from generator k, in the order one
    generator draws them alone; the geometry runs on all parts in one batch."""
    if name not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation '{name}'; allowed: {', '.join(AUGMENTATIONS)}")
    if len(mean) != len(std):
        raise ConfigError(f"normalisation mean {tuple(mean)} and std {tuple(std)} differ in length")
    if any(value <= 0 for value in std):
        raise ConfigError(f"normalisation std {tuple(std)} must be positive")
    mean, std = tuple(map(float, mean)), tuple(map(float, std))

    def augment(x: torch.Tensor, generators: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
        if name != "none":
            generators = [generators] if isinstance(generators, torch.Generator) else generators
            part = len(x) // len(generators)
            draws = []
            for generator in generators:
                crop = draw_crop_flip(part, generator, x.device)
                draws.append((*crop, draw_rotation(part, generator, x.device)) if name == "crop_flip_rotate" else crop)
            top, left, flip, *angle = (torch.cat(column) for column in zip(*draws))
            x = crop_flip(x, top, left, flip)
            if angle:
                x = rotate(x, angle[0])
        return normalize(x, mean, std)

    return augment
