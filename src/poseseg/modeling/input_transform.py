"""The model's input transform: torchvision's normalise + resize + batch, with the channel order and
pixel scale that pretrained weights expect (caffe2 / Detectron2 models see BGR pixels in 0..255)."""
from __future__ import annotations

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform


class InputTransform(GeneralizedRCNNTransform):
    """Images arrive as (3, H, W) RGB floats in [0, 1]; the trunk sees
    ``(reorder(image) * pixel_scale - pixel_mean) / pixel_std``. Defaults (rgb, 1) are torchvision's."""

    def __init__(self, min_size: int, max_size: int, pixel_mean: list[float], pixel_std: list[float], *,
                 size_divisible: int = 32, channel_order: str = "rgb", pixel_scale: float = 1.0):
        # training images come resized by the data pipeline (_skip_resize); inference resizes to min_size
        super().__init__(min_size, max_size, pixel_mean, pixel_std, size_divisible=size_divisible, _skip_resize=True)
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order={channel_order!r}; choose rgb or bgr")
        self.channel_order = channel_order
        self.pixel_scale = float(pixel_scale)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if self.channel_order == "bgr":
            image = image.flip(0)  # (3, H, W): RGB -> BGR
        if self.pixel_scale != 1.0:
            image = image * self.pixel_scale
        return super().normalize(image)
