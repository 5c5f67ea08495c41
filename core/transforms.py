"""Batched image preprocessing on tensors.

Datasets hand out uint8 batches `[B, H, W, C]`; these functions turn them into normalised float
`[B, 3, S, S]` model inputs on the training device in one go. Doing it per batch on tensors (not
per image in PIL) keeps a 2-core CPU busy with the model instead of with decoding, and runs on the
GPU when there is one. Random crops for the whole batch are a single `roi_align` call.

Train augmentation is SupCon's (Khosla et al. 2020, the recipe LaCViT builds on), batched: random
resized crop of 20-100 % of the area (at least 6x6 source pixels: 56-100 % of an 8x8 digit), horizontal flip (where the dataset allows it), colour jitter
0.4 (brightness, contrast, saturation; hue 0.1) on 80 % of the images, grey on 20 %. Greyscale data
(1-channel images) gets the documented equivalent: the same crop and flip, brightness and contrast
jitter 0.4 on 80 % of the images, and no saturation, hue or greyscale step (they are identities on
grey images). Unlike torchvision's ColorJitter the four jitters run in one fixed order.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 images become model inputs for one backbone."""

    image_size: int = 64  # square input resolution S
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel normalisation
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # random-resized-crop area range (train only; SupCon's)
    min_crop_side: int = 6  # a crop keeps at least this many source pixels a side: only tiny images (8x8 digits) notice
    hflip: bool = True  # random horizontal flips (train only); off for digits
    jitter: float = 0.4  # brightness / contrast / saturation factors drawn in 1 +- jitter (train only)
    hue: float = 0.1  # hue shift drawn in +- hue of a turn (train only, colour images)
    jitter_p: float = 0.8  # share of images that get the colour jitter
    grayscale_p: float = 0.2  # share of colour images turned grey (train only)

    def key(self) -> str:
        """Stable short hash for cache keys."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 `[B, H, W, C]` -> normalised float `[B, 3, S, S]`, deterministic."""
        x = _to_float_nchw(images)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        return self._normalise(x)

    def train(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 `[B, H, W, C]` -> augmented normalised float `[B, 3, S, S]`."""
        colour = images.ndim == 4 and images.shape[-1] == 3  # 1-channel data: no saturation / hue / grey step
        x = _to_float_nchw(images)
        b, _, h, w = x.shape
        g = generator
        dev = x.device
        rand = lambda *shape: torch.rand(*shape, generator=g).to(dev)  # noqa: E731 - CPU generator, any device
        # SupCon's 20 % of a 32x32 CIFAR image is 14x14 pixels; of an 8x8 digit it would be 3.6x3.6, no digit left
        lo = min(max(self.crop_scale[0], self.min_crop_side ** 2 / (h * w)), self.crop_scale[1])
        area = (lo + (self.crop_scale[1] - lo) * rand(b)) * h * w
        log_ratio = torch.log(torch.tensor(3 / 4)) + (torch.log(torch.tensor(4 / 3)) - torch.log(torch.tensor(3 / 4))) * rand(b)
        ratio = torch.exp(log_ratio.to(dev))
        cw = torch.sqrt(area * ratio).clamp(max=w)
        ch = torch.sqrt(area / ratio).clamp(max=h)
        x0 = (w - cw) * rand(b)
        y0 = (h - ch) * rand(b)
        boxes = torch.stack([torch.arange(b, device=dev, dtype=x.dtype), x0, y0, x0 + cw, y0 + ch], dim=1)
        # roi_align samples a bilinear grid; sampling_ratio=2 keeps it smooth when downscaling
        x = roi_align(x, boxes, output_size=(self.image_size, self.image_size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        if self.hflip:
            flip = rand(b) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.jitter_p > 0 and (self.jitter > 0 or (colour and self.hue > 0)):
            jittered = _colour_jitter(x, self.jitter, self.hue if colour else 0.0, colour, rand)
            x = torch.where((rand(b) < self.jitter_p)[:, None, None, None], jittered, x)
        if colour and self.grayscale_p > 0:
            grey = rand(b) < self.grayscale_p
            x = torch.where(grey[:, None, None, None], _luma(x).expand_as(x), x)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std


def _to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 `[B, H, W, C]` (C = 1 or 3) -> float `[B, 3, H, W]` in [0, 1]."""
    if images.ndim == 3:  # [B, H, W] greyscale
        images = images[..., None]
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def _luma(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 1, H, W] grey level (ITU-R 601, as torchvision's rgb_to_grayscale)."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _colour_jitter(x: torch.Tensor, strength: float, hue: float, colour: bool, rand) -> torch.Tensor:
    """Brightness, contrast (about the mean grey level), saturation and hue, each with its own factor per image."""
    b = x.shape[0]

    def factor():
        return (1 + strength * (2 * rand(b) - 1))[:, None, None, None]

    if strength > 0:
        x = (x * factor()).clamp(0, 1)
        mean = _luma(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * factor() + mean).clamp(0, 1)
        if colour:
            grey = _luma(x)
            x = ((x - grey) * factor() + grey).clamp(0, 1)
    if colour and hue > 0:
        x = shift_hue(x, hue * (2 * rand(b) - 1))
    return x


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB `[B, 3, H, W]` in [0, 1] by `shift` `[B]` turns (through HSV, batched)."""
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = delta.clamp(min=1e-8)
    r, g, b = ((maxc - c) / safe for c in x.unbind(1))  # distances from the max channel
    h = torch.where(x[:, 0] == maxc, b - g, torch.where(x[:, 1] == maxc, 2.0 + r - b, 4.0 + g - r))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + shift.to(x.device, x.dtype)[:, None, None]) % 1.0
    v, s = maxc, delta / maxc.clamp(min=1e-8)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    idx = (sector.long() % 6).unsqueeze(1)  # [B, 1, H, W]
    channels = [torch.stack(c, dim=1).gather(1, idx) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))]
    return torch.cat(channels, dim=1)
