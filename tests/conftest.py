import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests can import synth_helpers

from synth_helpers import SIZE  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """8 training and 4 validation synthetic images of SIZE px; people drawn twice the default size, so
    that at this small image size several are over 32² px and carry keypoints (3 of 5 in val)."""
    from poseseg.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, num_train=8, num_val=4, seed=0, image_size=SIZE, max_people=3, people_scale=2.0)
    return root


@pytest.fixture(scope="session")
def trained_checkpoint(synth_data, tmp_path_factory) -> Path:
    """A tiny model trained for a few steps: enough to exercise predict and eval end to end."""
    from poseseg.engine.train import train
    from synth_helpers import tiny_config

    out = tmp_path_factory.mktemp("trained")
    return train(tiny_config(synth_data, out, **{"train.iters": 4}), quiet=True).final_checkpoint


@pytest.fixture(scope="session")
def coco_sample(tmp_path_factory) -> Path:
    """The real COCO sample (4 images, 14 people): image 785 shipped, stand-ins for the NC images."""
    from coco_sample import build_coco_sample

    return build_coco_sample(tmp_path_factory.mktemp("coco_sample"))
