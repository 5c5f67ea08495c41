"""core/transforms.py: batched eval / train preprocessing on uint8 tensors."""
import pytest
import torch

from core.transforms import Preprocess

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _gradient(b=64, h=20, w=24):
    """uint8 [B, H, W, 1]: dark on the left, bright on the right (asymmetric under a flip)."""
    row = torch.linspace(0, 255, w).round().to(torch.uint8)
    return row.expand(b, h, w).unsqueeze(-1).contiguous()


def test_eval_shape_and_normalisation_of_a_constant_grey_image():
    p = Preprocess(image_size=16, mean=MEAN, std=STD)
    images = torch.full((3, 10, 13, 3), 128, dtype=torch.uint8)
    x = p.eval(images)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    expected = torch.tensor([(128 / 255 - m) / s for m, s in zip(MEAN, STD)])
    torch.testing.assert_close(x, expected[None, :, None, None].expand_as(x), atol=1e-5, rtol=0)


def test_eval_of_greyscale_gives_three_equal_channels():
    p = Preprocess(image_size=8)
    grey = torch.randint(0, 256, (2, 8, 8, 1), dtype=torch.uint8)
    x = p.eval(grey)
    assert x.shape == (2, 3, 8, 8)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    # same size in and out: only the normalisation, (v/255 - 0.5) / 0.5
    torch.testing.assert_close(x[:, 0], grey[..., 0].float() / 255 * 2 - 1, atol=1e-6, rtol=0)
    # [B, H, W] without a channel axis is greyscale too
    torch.testing.assert_close(p.eval(grey[..., 0]), x)


def test_eval_is_deterministic_and_resizes():
    p = Preprocess(image_size=32)
    images = torch.randint(0, 256, (4, 28, 28, 3), dtype=torch.uint8)
    assert torch.equal(p.eval(images), p.eval(images))
    assert p.eval(images).shape == (4, 3, 32, 32)


def test_train_is_deterministic_for_a_seeded_generator_and_differs_between_draws():
    p = Preprocess(image_size=16)
    images = torch.randint(0, 256, (8, 28, 28, 3), dtype=torch.uint8)
    a = p.train(images, torch.Generator().manual_seed(0))
    b = p.train(images, torch.Generator().manual_seed(0))
    assert a.shape == (8, 3, 16, 16)
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    first, second = p.train(images, g), p.train(images, g)
    assert torch.equal(first, a)
    assert not torch.equal(first, second)
    assert (first - second).abs().flatten(1).amax(1).min() > 0.05  # every image changed, not just some
    assert not torch.equal(a, p.eval(images))
    assert a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6  # clamped to [0, 1] before normalising


def _left_minus_right(x):
    return x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3)) - x[..., x.shape[-1] // 2:].mean(dim=(1, 2, 3))


def test_hflip_false_never_flips():
    images = _gradient()
    x = Preprocess(image_size=16, hflip=False).train(images, torch.Generator().manual_seed(1))
    # crops, jitter and rescaling keep the left half darker than the right; only a flip swaps them
    assert (_left_minus_right(x) < 0).all()


def test_hflip_true_flips_about_half():
    images = _gradient()
    x = Preprocess(image_size=16, hflip=True).train(images, torch.Generator().manual_seed(1))
    flipped = int((_left_minus_right(x) > 0).sum())
    assert 16 <= flipped <= 48  # Binomial(64, 0.5); this seed is fixed, the band is ~4 sigma wide


def test_key_changes_with_settings():
    assert Preprocess().key() == Preprocess().key()
    assert Preprocess(hflip=False).key() != Preprocess().key()
    assert Preprocess(image_size=32).key() != Preprocess().key()


@pytest.mark.parametrize("shape", [(2, 9, 11, 3), (2, 9, 11, 1)])
def test_train_output_shape_any_input_size(shape):
    x = Preprocess(image_size=12).train(torch.zeros(shape, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 12, 12) and torch.isfinite(x).all()


def _is_grey(x):
    return (x[:, 0] - x[:, 1]).abs().flatten(1).amax(1).lt(1e-6) & (x[:, 1] - x[:, 2]).abs().flatten(1).amax(1).lt(1e-6)


def test_colour_augmentation_is_supcon_strength():
    """RGB: colour jitter on about 80 % of the images, grey on about 20 %; greyscale data stays grey."""
    # one saturated colour per image: crops and flips leave it alone, so any change is the colour augmentation's
    colours = torch.randint(0, 256, (400, 1, 1, 3), dtype=torch.uint8)
    colours[:, :, :, 0] = 255
    colours[:, :, :, 2] = 0
    rgb = colours.expand(400, 20, 20, 3).contiguous()
    p = Preprocess(image_size=16)
    x = p.train(rgb, torch.Generator().manual_seed(0))
    grey = _is_grey(x)
    assert 0.13 < grey.float().mean() < 0.27  # Binomial(400, 0.2), ~4 sigma
    changed = (x - p.eval(rgb)).abs().flatten(1).amax(1) > 0.05
    untouched = ~changed & ~grey
    assert 0.12 < untouched.float().mean() < 0.30  # no jitter on ~20 % of the images (minus those made grey)
    grey_in = torch.randint(0, 256, (64, 20, 20, 1), dtype=torch.uint8)
    assert _is_grey(p.train(grey_in, torch.Generator().manual_seed(0))).all()


def test_hue_shift_matches_torchvision():
    from torchvision.transforms.functional import adjust_hue

    from core.transforms import shift_hue

    x = torch.rand(3, 3, 6, 6)
    for shift in (-0.1, 0.0, 0.05, 0.3):
        torch.testing.assert_close(shift_hue(x, torch.full((3,), shift)), adjust_hue(x, shift), atol=1e-5, rtol=0)


def test_random_resized_crop_reaches_a_fifth_of_the_image():
    """SupCon's crop scale 0.2-1: some crops cover well under the old 0.6 minimum (seen as a stretched gradient)."""
    images = _gradient(b=256, h=40, w=40)
    x = Preprocess(image_size=16, hflip=False, jitter=0.0, grayscale_p=0.0).train(images, torch.Generator().manual_seed(0))
    span = x[:, 0].amax(dim=(1, 2)) - x[:, 0].amin(dim=(1, 2))  # the range of grey levels inside the crop
    full = 2 * (255 / 255)  # the whole gradient after (v - 0.5) / 0.5
    assert (span < 0.55 * full).float().mean() > 0.1  # narrow crops (width < 55 %) are common
