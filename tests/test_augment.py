"""Batched augmentation against torchvision's per-image transforms (the papers' pipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import stats
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from noisybench.data.augment import (
    AUGMENTATIONS,
    build_augment,
    crop_flip,
    draw_crop_flip,
    draw_rotation,
    normalize,
    rotate,
)
from noisybench.registry import ConfigError

CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)


def random_images(batch: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    # Values from 1 up, so that raw black (0) appears only where padding or fill puts it.
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        1, 256, (batch, channels, size, size), dtype=torch.uint8, generator=generator
    )


def position_image(size: int = 32) -> torch.Tensor:
    """Channel 0 holds 10 + row, channel 1 holds 10 + column: each pixel tells its origin."""
    index = torch.arange(size, dtype=torch.uint8) + 10
    return torch.stack([index[:, None].expand(size, size), index[None, :].expand(size, size)])


def test_normalize_matches_torchvision_to_tensor_and_normalize_bit_for_bit():
    images = random_images(4)
    reference = torch.stack(
        [
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)(
                TF.to_tensor(Image.fromarray(img.permute(1, 2, 0).numpy()))
            )
            for img in images
        ]
    )
    ours = normalize(images, CIFAR10_MEAN, CIFAR10_STD)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, reference)
    # Hand-computed: raw 255 in channel 0 -> (1 - 0.49139968) / 0.24703233.
    white = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    white_red = normalize(white, CIFAR10_MEAN, CIFAR10_STD)[0, 0, 0, 0].item()
    assert white_red == pytest.approx((1 - 0.49139968) / 0.24703233, rel=1e-6)


def test_none_is_normalize_only():
    images = random_images(8)
    augment = build_augment("none", CIFAR10_MEAN, CIFAR10_STD)
    assert torch.equal(
        augment(images, torch.Generator().manual_seed(0)),
        normalize(images, CIFAR10_MEAN, CIFAR10_STD),
    )


def test_crop_at_every_offset_matches_torchvision_pad_then_crop():
    # RandomCrop(32, padding=4) pads with raw 0 and crops at (top, left) in 0..8: all 81 offsets.
    offsets = torch.cartesian_prod(torch.arange(9), torch.arange(9))
    image = random_images(1)[0]
    batch = image.expand(len(offsets), 3, 32, 32)
    ours = crop_flip(
        batch, offsets[:, 0], offsets[:, 1], torch.zeros(len(offsets), dtype=torch.bool)
    )
    padded = TF.pad(image, [4], fill=0)
    for k, (top, left) in enumerate(offsets.tolist()):
        assert torch.equal(ours[k], TF.crop(padded, top, left, 32, 32)), (top, left)


def test_flip_is_an_exact_mirror_and_centre_crop_is_identity():
    images = random_images(2)
    centre = torch.full((2,), 4)
    assert torch.equal(crop_flip(images, centre, centre, torch.tensor([False, False])), images)
    flipped = crop_flip(images, centre, centre, torch.tensor([True, False]))
    assert torch.equal(flipped[0], TF.hflip(images[0]))
    assert torch.equal(flipped[1], images[1])
    # Flip after an offset crop: the mirror of the crop, as RandomCrop then RandomHorizontalFlip.
    shifted = crop_flip(images[:1], torch.tensor([1]), torch.tensor([7]), torch.tensor([True]))
    assert torch.equal(shifted[0], TF.hflip(TF.crop(TF.pad(images[0], [4]), 1, 7, 32, 32)))


def test_padded_pixels_normalise_to_minus_mean_over_std():
    images = random_images(1)
    raw = crop_flip(images, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]))
    out = normalize(raw, CIFAR10_MEAN, CIFAR10_STD)[0]
    # Offset (0, 0): the first 4 rows and columns are padding.
    for channel, (mean, std) in enumerate(zip(CIFAR10_MEAN, CIFAR10_STD)):
        assert torch.allclose(out[channel, :4, :], torch.tensor(-mean / std), atol=1e-6)
        assert torch.allclose(out[channel, :, :4], torch.tensor(-mean / std), atol=1e-6)
        assert (out[channel, 4:, 4:] > -mean / std + 1e-3).all()  # real pixels are >= 1


def test_random_crop_flip_draws_uniform_offsets_and_fair_flips_per_sample():
    batch = 4096
    images = position_image().expand(batch, 2, 32, 32)
    out = crop_flip(images, *draw_crop_flip(batch, torch.Generator().manual_seed(1))).long()
    # Output pixel (4, 4) lies inside the image for every offset: its row is `top`; its column is
    # `left` unflipped, and `left + 23` (= left + 31 - 8) when mirrored.
    top = out[:, 0, 4, 4] - 10
    column = out[:, 1, 4, 4] - 10
    flipped = column >= 23
    left = torch.where(flipped, column - 23, column)
    # Mirrored: columns fall from left to right.
    assert torch.equal(flipped, out[:, 1, 4, 5] < out[:, 1, 4, 4])
    for offset in (top, left):
        counts = torch.bincount(offset, minlength=9)
        assert len(counts) == 9  # offsets only in 0..8
        assert stats.chisquare(counts.numpy()).pvalue > 1e-4
    # Fair coin: 4096 draws, standard error 0.0078.
    assert abs(flipped.float().mean().item() - 0.5) < 4 * 0.0078


def test_two_identical_images_get_different_augmentations():
    image = random_images(1)
    for name, at_least in (("crop_flip", 35), ("crop_flip_rotate", 55)):
        out = build_augment(name, CIFAR10_MEAN, CIFAR10_STD)(
            image.expand(64, 3, 32, 32), torch.Generator().manual_seed(0)
        )
        distinct = torch.unique(out.flatten(1), dim=0).shape[0]
        # 162 equally likely crop/flip pairs: 64 draws give about 53 distinct ones; the angle
        # makes nearly all 64 distinct.
        assert distinct >= at_least, (name, distinct)


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_deterministic_under_the_same_seed(name):
    images = random_images(32)
    augment = build_augment(name, CIFAR10_MEAN, CIFAR10_STD)
    first = augment(images, torch.Generator().manual_seed(7))
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(7)))
    other = augment(images, torch.Generator().manual_seed(8))
    assert torch.equal(first, other) == (name == "none")


def test_rotation_by_zero_is_identity():
    images = random_images(4)
    assert torch.equal(rotate(images, torch.zeros(4)), images.float())


@pytest.mark.parametrize("shape", [(32, 32), (28, 28), (24, 40)])
def test_rotation_equals_torchvision_tensor_rotate(shape):
    # Same grid as torchvision's tensor rotate (pixel centres, align_corners=False): exact.
    generator = torch.Generator().manual_seed(3)
    image = torch.randint(1, 256, (3, *shape), dtype=torch.uint8, generator=generator)
    angles = [-20.0, -13.7, -5.0, 0.4, 7.25, 15.0, 19.9]
    ours = rotate(image.expand(len(angles), *image.shape), torch.tensor(angles))
    for k, angle in enumerate(angles):
        reference = TF.rotate(image, angle, interpolation=InterpolationMode.NEAREST, fill=[0.0] * 3)
        assert torch.equal(ours[k], reference.float()), angle


def test_rotation_agrees_with_pil_rotate_of_the_papers_pipeline():
    # The papers rotate PIL images. Pillow maps pixel centres the same way but rounds in its own
    # arithmetic, so a source coordinate lying almost exactly on a pixel edge can land on the
    # neighbour: measured 0.02% of pixels on average, at most 0.25% for one angle.
    image = random_images(1)[0]
    pil_image = Image.fromarray(image.permute(1, 2, 0).numpy())
    angles = [-20.0, -11.3, -4.0, 2.5, 9.9, 17.0]
    ours = rotate(image.expand(len(angles), 3, 32, 32), torch.tensor(angles))
    for k, angle in enumerate(angles):
        rotated = TF.rotate(pil_image, angle, interpolation=InterpolationMode.NEAREST, fill=0)
        reference = torch.from_numpy(np.array(rotated)).permute(2, 0, 1).float()
        agreement = (ours[k] == reference).float().mean().item()
        assert agreement >= 0.99, (angle, agreement)


def test_random_rotation_angles_are_per_sample_and_uniform_within_20_degrees():
    # Recover each sample's angle as the best match among rotations on a 0.05-degree grid: a
    # grid angle next to the true one differs in a few pixels (a degree off: in about a fifth).
    image = random_images(1, channels=1)
    batch = 96
    out = rotate(image.expand(batch, 1, 32, 32), draw_rotation(batch, torch.Generator().manual_seed(5)))
    grid = torch.arange(-25.0, 25.0 + 1e-3, 0.05)
    candidates = rotate(image.expand(len(grid), 1, 32, 32), grid).flatten(1)
    agreement = (
        (out.flatten(1)[:, None, :] == candidates[None, :, :]).float().mean(dim=2)
    )  # [batch, grid]
    best_agreement, best = agreement.max(dim=1)
    assert best_agreement.min() > 0.97
    recovered = grid[best]
    assert recovered.abs().max() <= 20.05
    assert recovered.min() < -15 and recovered.max() > 15
    # U[-20, 20]: mean 0 with standard error 11.55 / sqrt(96) = 1.18; std 11.55.
    assert abs(recovered.mean().item()) < 4 * 1.18
    assert 9.5 < recovered.std().item() < 13.5


def test_crop_flip_rotate_fill_is_raw_black():
    images = random_images(256)
    out = build_augment("crop_flip_rotate", CIFAR10_MEAN, CIFAR10_STD)(
        images, torch.Generator().manual_seed(2)
    )
    black = torch.tensor([-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)])[None, :, None, None]
    is_black = torch.isclose(out, black.expand_as(out), atol=1e-6)
    # Raw pixels are >= 1, so black means padding or fill; the three channels agree on where.
    assert is_black.any()
    assert torch.equal(is_black[:, 0], is_black[:, 1]) and torch.equal(
        is_black[:, 0], is_black[:, 2]
    )


def test_unknown_augmentation_is_a_config_error():
    with pytest.raises(
        ConfigError, match="unknown augmentation 'rotate'.*none, crop_flip, crop_flip_rotate"
    ):
        build_augment("rotate", CIFAR10_MEAN, CIFAR10_STD)
    with pytest.raises(ConfigError, match="differ in length"):
        build_augment("none", CIFAR10_MEAN, CIFAR10_STD[:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_a_cuda_generator():
    images = random_images(64).cuda()
    augment = build_augment("crop_flip_rotate", CIFAR10_MEAN, CIFAR10_STD)
    first = augment(images, torch.Generator("cuda").manual_seed(0))
    assert first.device.type == "cuda" and first.dtype == torch.float32
    assert torch.equal(first, augment(images, torch.Generator("cuda").manual_seed(0)))
    # Given the same draws, the GPU computes what the CPU computes (up to float rounding of
    # source coordinates that lie on a pixel edge).
    draws = torch.Generator().manual_seed(1)
    top, left = torch.randint(0, 9, (2, 64), generator=draws)
    flip, angle = torch.rand(64, generator=draws) < 0.5, torch.rand(64, generator=draws) * 40 - 20
    cpu = rotate(crop_flip(images.cpu(), top, left, flip), angle)
    gpu = rotate(crop_flip(images, top.cuda(), left.cuda(), flip.cuda()), angle.cuda())
    assert (gpu.cpu() == cpu).float().mean() > 0.999
