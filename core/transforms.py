"""Batched image preprocessing on tensors.

Datasets hand out uint8 batches `[B, H, W, C]`; these functions turn them into normalised float
`[B, 3, S, S]` model inputs on the training device in one go. Doing it per batch on tensors (not
per image in PIL) keeps a 2-core CPU busy with the model instead of with decoding, and runs on the
GPU when there is one. Random crops for the whole batch are a single `roi_align` call.
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
    crop_scale: tuple[float, float] = (0.6, 1.0)  # random-resized-crop area range (train only)
    hflip: bool = True  # random horizontal flips (train only); off for digits
    jitter: float = 0.2  # brightness/contrast jitter strength (train only)

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
        x = _to_float_nchw(images)
        b, _, h, w = x.shape
        g = generator
        dev = x.device
        rand = lambda *shape: torch.rand(*shape, generator=g).to(dev)  # noqa: E731 - CPU generator, any device
        area = (self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * rand(b)) * h * w
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
        if self.jitter > 0:
            brightness = 1 + self.jitter * (2 * rand(b) - 1)
            contrast = 1 + self.jitter * (2 * rand(b) - 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * contrast[:, None, None, None] + mean) * brightness[:, None, None, None]
            x = x.clamp(0, 1)
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
