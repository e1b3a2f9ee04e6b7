"""A small synthetic dataset and a fast tiny config, shared by the engine, predict and demo tests."""
import json
from pathlib import Path

import poseseg

SIZE = 160


def engine_overrides(data: Path, out: Path, **extra) -> list[str]:
    values = {
        "data.train_json": data / "train.json", "data.train_images": data / "train",
        "data.val_json": data / "val.json", "data.val_images": data / "val",
        "data.train_sizes": f"[{SIZE}]", "data.max_size": SIZE, "data.num_workers": 0,
        "model.input.test_size": SIZE, "train.batch_size": 2, "train.iters": 6, "train.checkpoint_every": 2,
        "train.warmup_iters": 2, "train.log_every": 1, "train.output_dir": out, "train.device": "cpu",
        "train.keep_checkpoints": 10,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(data: Path, out: Path, **extra):
    return poseseg.load_config("tiny", engine_overrides(data, out, **extra))


def with_an_empty_image(data: Path, out_json: Path) -> Path:
    """Two training images: the first keeps its people, the second has none."""
    d = json.loads((data / "train.json").read_text())
    d["images"] = d["images"][:2]
    first = d["images"][0]["id"]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == first]
    out_json.write_text(json.dumps(d))
    return out_json
