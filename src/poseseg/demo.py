"""``poseseg demo``: the whole job on the embedded synthetic people, for a fixed number of iterations.

Generates the dataset if it is missing, trains the ``tiny`` preset for ``DEMO_ITERS`` iterations (the
same seed gives the same numbers on any machine; only the time differs), evaluates on the synthetic
val split, prints the AP table and writes the checkpoint, ``metrics.json`` and overlays of validation
images into ``--out``. ``--minutes`` trains within a time budget instead (the time schedule), where a
slower machine trains fewer iterations and reaches less.
"""
from __future__ import annotations

import json
import time
from pathlib import Path


from poseseg.config import Config, load_config
from poseseg.engine import checkpoint as ckpt

DEMO_TRAIN_IMAGES = 600
DEMO_VAL_IMAGES = 60
EVAL_RESERVE_S = 50.0  # evaluation on the val split + overlays, kept out of a --minutes budget
MAX_ITERS = 1_000_000  # with --minutes the time budget ends the run, not an iteration count
DEMO_ITERS = 990  # what the 9.5-minute time budget trained on a quiet 2-core machine (issue 14)
# what the README reports for the default demo (mean ± spread of 3 seeds; the same on every machine)
README_AP = {"bbox": (0.456, 0.033), "segm": (0.336, 0.014), "keypoints": (0.414, 0.020)}
KEYPOINT_PROBABILITY = 0.5  # overlays draw a calibrated keypoint when it is right with probability >= 0.5
RAW_KEYPOINT_THRESH = 0.2  # ... or, uncalibrated, when its raw score is this high (poseseg.visualize's default)


def ensure_dataset(data_dir: Path, *, num_train: int, num_val: int, seed: int = 0, size: int = 320) -> Path:
    """The synthetic dataset in ``data_dir``, generated when missing or made by another version or seed."""
    from poseseg.data.synth import SYNTH_VERSION, main_synth

    if (data_dir / "train.json").exists() and (data_dir / "val.json").exists():
        info = json.loads((data_dir / "val.json").read_text()).get("info", {})
        if info.get("version") == SYNTH_VERSION and info.get("seed") == seed:
            print(f"using the synthetic dataset in {data_dir}")
            return data_dir
        print(f"{data_dir} holds synthetic data of version {info.get('version')} seed {info.get('seed')}: "
              f"making version {SYNTH_VERSION} seed {seed} instead")
    print(f"generating {num_train} + {num_val} synthetic images into {data_dir} ...")
    main_synth(str(data_dir), num_train, num_val, seed, size, workers=2)
    return data_dir


def demo_config(data_dir: Path, out: Path, overrides: list[str], *, iters: int = DEMO_ITERS,
                train_minutes: float | None = None) -> Config:
    """The tiny preset on the synthetic data, trained for ``iters`` iterations (warm-up and lr drops at
    the preset's fractions of the run), or with ``train_minutes`` for that long by the time schedule."""
    if train_minutes is None:
        schedule = [f"train.iters={iters}", f"train.lr_steps=[{round(0.73 * iters)},{round(0.9 * iters)}]",
                    f"train.warmup_iters={max(1, round(0.067 * iters))}"]
    else:
        schedule = ["train.schedule=time", f"train.time_limit_minutes={train_minutes:.4f}", f"train.iters={MAX_ITERS}"]
    return load_config("tiny", [
        f"data.train_json={data_dir / 'train.json'}", f"data.train_images={data_dir / 'train'}",
        f"data.val_json={data_dir / 'val.json'}", f"data.val_images={data_dir / 'val'}",
        f"train.output_dir={out.parent}", f"train.name={out.name}", *schedule, "train.checkpoint_every=100",
        # flip test-time augmentation of the keypoints (5-minute runs: keypoint AP 0.136 -> 0.158); not of the
        # masks, which it made worse (0.102 -> 0.089); see benchmarks/RESULTS.md, issue 14
        "model.test_flip=true", "model.test_flip_masks=false", *overrides])


def draw_overlays(weights: Path, data_dir: Path, out_dir: Path, num: int = 8) -> tuple[list[Path], float]:
    """Predictions on the validation images, the first ``num`` drawn with every detected person's
    skeleton. The keypoint scores are calibrated first on the val split (``poseseg calibrate``, written
    beside the weights as ``model_calibrated.pt``), so a keypoint is drawn when it lies within OKS-ks 0.5
    of the truth with probability >= 0.5. Returns the paths and that threshold."""
    from poseseg.data.image_io import load_image_rgb
    from poseseg.keypoint_schema import KeypointSchema
    from poseseg.engine.calibrate import calibrate_checkpoint
    from poseseg.predictor import Predictor
    from poseseg.visualize import draw

    calibrated = weights.with_name("model_calibrated.pt")
    thresh = KEYPOINT_PROBABILITY
    try:
        if not calibrated.exists():
            report = calibrate_checkpoint(weights, data_dir / "val.json", data_dir / "val", calibrated)
            print(f"{report.summary()}\n(fitted on the val pictures it is measured on: their AP in metrics.json "
                  f"is the uncalibrated model's) -> {calibrated}")
        drawn_with = calibrated
    except ValueError as e:  # a short run detects too few people to fit on
        print(f"keypoint scores not calibrated ({e}); drawing the raw scores >= {RAW_KEYPOINT_THRESH}")
        drawn_with, thresh = weights, RAW_KEYPOINT_THRESH
    predictor = Predictor(drawn_with, device="cpu", score_thresh=0.5)
    schema = KeypointSchema.from_dict(predictor.schema) if predictor.schema else None
    val = json.loads((data_dir / "val.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for info in val["images"][:num]:
        path = data_dir / "val" / info["file_name"]
        result = predictor.predict(path, with_offsets=True)
        picture = draw(load_image_rgb(path), result, schema=schema, keypoint_thresh=thresh, show_offsets=True,
                       offsets=result.get("keypoint_peaks"))
        target = out_dir / f"{Path(info['file_name']).stem}_pred.png"
        picture.save(target)
        written.append(target)
    return written, thresh


def verdict(metrics: dict | None, iterations: int) -> list[str]:
    """One line per task: this run's AP against what the README reports for the default demo."""
    if iterations != DEMO_ITERS:
        return [f"trained {iterations} iterations; the README's numbers are for {DEMO_ITERS} "
                "(`poseseg demo` without --minutes or train.iters), so they do not compare"]
    lines = []
    for task, (mean, spread) in README_AP.items():
        ap = (metrics or {}).get(task, {}).get("AP")
        if ap is None:
            lines.append(f"{task:9s} no AP (no validation set?)")
            continue
        word = "as expected" if ap >= mean - 2 * spread - 0.02 else "below the README's seeds"
        lines.append(f"{task:9s} AP {ap:.3f} vs README {mean:.3f} ± {spread:.3f}: {word}")
    return lines


def run_demo(*, minutes: float | None = None, iters: int = DEMO_ITERS, out: str | Path = "runs/demo",
             data_dir: str | Path | None = None, seed: int = 0,
             resume: bool = False, overrides: list[str] | None = None, num_train: int = DEMO_TRAIN_IMAGES,
             num_val: int = DEMO_VAL_IMAGES) -> dict:
    from poseseg.engine.train import config_for_resume, train

    start = time.perf_counter()
    out = Path(out)
    data_dir = Path(data_dir or ("data/synth" if seed == 0 else f"data/synth-seed{seed}"))
    ensure_dataset(data_dir, num_train=num_train, num_val=num_val, seed=seed)
    overrides = [f"train.seed={seed}", *(overrides or [])]
    previous = ckpt.latest_checkpoint(out) if resume else None
    if previous is not None:
        print(f"resuming {previous}")
        result = train(config_for_resume(previous, overrides), resume=previous)
    elif minutes is not None:
        train_seconds = max(minutes * 60 - (time.perf_counter() - start) - EVAL_RESERVE_S, 5.0)
        print(f"training tiny for {train_seconds / 60:.1f} minutes (the rest of the {minutes:g}-minute budget "
              "goes to data and evaluation)")
        result = train(demo_config(data_dir, out, overrides, train_minutes=train_seconds / 60))
    else:
        print(f"training tiny for {iters} iterations (about 12 minutes on 2 cores; the progress line shows the eta)")
        result = train(demo_config(data_dir, out, overrides, iters=iters))
    run_dir = result.run_dir
    overlays, _ = draw_overlays(result.final_checkpoint, data_dir, run_dir / "overlays")
    print(f"\ncheckpoint {result.final_checkpoint}\nmetrics   {run_dir / 'metrics.json'}\n"
          f"overlays  {overlays[0].parent} ({len(overlays)} images)\n"
          f"took {(time.perf_counter() - start) / 60:.1f} minutes")
    print("\n".join(verdict(result.metrics, result.iterations)))
    return {"run_dir": run_dir, "metrics": result.metrics, "overlays": overlays}
