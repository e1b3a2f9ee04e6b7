"""Shared by the export tests: the COCO sample's pictures as the model takes them."""
import pytest
import torch

from poseseg.data.image_io import load_image_rgb
from poseseg.predictor import to_tensor_image


@pytest.fixture(scope="module")
def coco_images(coco_sample) -> list[torch.Tensor]:
    """The 4 COCO sample images (4 different sizes), as the model takes them."""
    return [to_tensor_image(load_image_rgb(p)) for p in sorted(coco_sample.glob("*.jpg"))]
