"""``poseseg demo``: the whole job on the embedded synthetic people, within a time budget.

Generates the dataset if it is missing, trains the ``tiny`` preset for as many iterations as the
budget allows (measured, not guessed), evaluates on the synthetic val split, prints the AP table
and writes the checkpoint, ``metrics.json`` and overlays of validation images into ``--out``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from poseseg.config import Config, load_config
from poseseg.engine import checkpoint as ckpt

DEMO_TRAIN_IMAGES = 600
DEMO_VAL_IMAGES = 60
# The probe's steps come from an untrained model, whose few positive RoIs make the mask and keypoint
# heads cheap; once the RPN finds people every image fills its RoI caps. Measured on the demo data
# (2 cores): 0.72-0.82 s per step at the start, 0.8-1.2 s from iteration ~60 on; over whole runs the
# average was 1.08-1.36x the probe (x1.45 and x1.3 left 1.4 and 1.1 of 9 minutes unused). The time
# limit stops a run that turns out slower than planned.
LATER_STEP_FACTOR = 1.2


def ensure_dataset(data_dir: Path, *, num_train: int, num_val: int, seed: int = 0, size: int = 320) -> Path:
    """The synthetic dataset in ``data_dir``, generated only when missing."""
    from poseseg.data.synth import main_synth

    if (data_dir / "train.json").exists() and (data_dir / "val.json").exists():
        print(f"using the synthetic dataset in {data_dir}")
        return data_dir
    print(f"generating {num_train} + {num_val} synthetic images into {data_dir} ...")
    main_synth(str(data_dir), num_train, num_val, seed, size, workers=2)
    return data_dir


def demo_config(data_dir: Path, out: Path, iters: int, overrides: list[str]) -> Config:
    """The tiny preset on the synthetic data, with its schedule stretched to ``iters``."""
    cfg = load_config("tiny", [
        f"data.train_json={data_dir / 'train.json'}", f"data.train_images={data_dir / 'train'}",
        f"data.val_json={data_dir / 'val.json'}", f"data.val_images={data_dir / 'val'}",
        f"train.output_dir={out.parent}", f"train.name={out.name}", *overrides])
    base = cfg.train.iters
    cfg.train.lr_steps = [max(1, round(s * iters / base)) for s in cfg.train.lr_steps]
    cfg.train.warmup_iters = min(cfg.train.warmup_iters, max(1, iters // 10))
    cfg.train.iters = iters
    cfg.train.checkpoint_every = max(50, iters // 10)
    return cfg


def seconds_per_step(cfg: Config, steps: int = 4) -> float:
    """Time a few real training steps of the configured model on the configured data."""
    from poseseg.data.loader import build_train_loader
    from poseseg.engine.train import build_datasets
    from poseseg.modeling.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg).train()
    train_set, _, transforms, _ = build_datasets(cfg, model.keypoint_head.num_keypoints)
    loader = iter(build_train_loader(train_set, transforms, batch_size=cfg.train.batch_size, seed=0, rank=0,
                                     world_size=1, start_iter=0, num_workers=0))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        images, targets = next(loader)
        for t in targets:
            t.pop("skipped_images", None)
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def draw_overlays(weights: Path, data_dir: Path, out_dir: Path, num: int = 8) -> list[Path]:
    """Predictions on the first ``num`` validation images, drawn."""
    from poseseg.data.image_io import load_image_rgb
    from poseseg.data.schema import KeypointSchema
    from poseseg.predictor import Predictor
    from poseseg.visualize import draw

    predictor = Predictor(weights, device="cpu", score_thresh=0.5)
    schema = KeypointSchema.from_dict(predictor.schema) if predictor.schema else None
    val = json.loads((data_dir / "val.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for info in val["images"][:num]:
        path = data_dir / "val" / info["file_name"]
        result = predictor.predict(path, with_offsets=True)
        picture = draw(load_image_rgb(path), result, schema=schema, show_offsets=True,
                       offsets=result.get("keypoint_peaks"))
        target = out_dir / f"{Path(info['file_name']).stem}_pred.png"
        picture.save(target)
        written.append(target)
    return written


def run_demo(*, minutes: float = 9.0, out: str | Path = "runs/demo", data_dir: str | Path = "data/synth",
             resume: bool = False, overrides: list[str] | None = None, num_train: int = DEMO_TRAIN_IMAGES,
             num_val: int = DEMO_VAL_IMAGES, min_iters: int = 20) -> dict:
    from poseseg.engine.train import config_for_resume, train

    start = time.perf_counter()
    out, data_dir = Path(out), Path(data_dir)
    ensure_dataset(data_dir, num_train=num_train, num_val=num_val)
    previous = ckpt.latest_checkpoint(out) if resume else None
    if previous is not None:
        print(f"resuming {previous}")
        result = train(config_for_resume(previous, overrides), resume=previous)
    else:
        probe = demo_config(data_dir, out, 1000, overrides or [])
        step = seconds_per_step(probe) * LATER_STEP_FACTOR
        spent = time.perf_counter() - start
        eval_reserve = 50.0  # evaluation on the val split + overlays
        train_seconds = minutes * 60 - spent - eval_reserve
        iters = max(min_iters, int(train_seconds / step))
        print(f"about {step:.2f} s per step on this machine: training {iters} iterations to fit {minutes:g} minutes")
        # the schedule is planned for `iters`; the time limit is the guarantee if this machine is slower
        limit = [f"train.time_limit_minutes={max(train_seconds, 1.0) / 60:.3f}"]
        result = train(demo_config(data_dir, out, iters, [*limit, *(overrides or [])]))
    run_dir = result.run_dir
    overlays = draw_overlays(result.final_checkpoint, data_dir, run_dir / "overlays")
    print(f"\ncheckpoint {result.final_checkpoint}\nmetrics   {run_dir / 'metrics.json'}\n"
          f"overlays  {overlays[0].parent} ({len(overlays)} images)\n"
          f"took {(time.perf_counter() - start) / 60:.1f} minutes")
    return {"run_dir": run_dir, "metrics": result.metrics, "overlays": overlays}
