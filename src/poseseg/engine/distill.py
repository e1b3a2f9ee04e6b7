"""``poseseg distill``: fold a two-trunk model (``model.mask.trunk=own``) back into one trunk.

The student is the teacher without its mask trunk: the same trunk, RPN, box and keypoint heads, and a
mask head that learns, on any folder of unlabelled pictures, to give the teacher's masks (its mask
probabilities at its boxes) from the shared trunk's features. Only the mask head (and a deformable
mask pooler's offsets) train, so the student's boxes and keypoints are the teacher's exactly, and it
costs one trunk again. Held-back pictures measure the mask IoU against the teacher.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from poseseg.config import Config, apply_overrides, config_from_dict
from poseseg.data.image_io import IMAGE_EXTS, ImageReadError, list_image_files, load_image_rgb, rgb_to_tensor
from poseseg.engine import checkpoint as ckpt
from poseseg.engine.run_log import RunLogger, new_run_dir
from poseseg.modeling.mask_paste import masks_to_image
from poseseg.modeling.model import PoseSegModel, build_model
from poseseg.modeling.postprocess import postprocess
from poseseg.weights.checkpoint_file import load_checkpoint, save_checkpoint
from poseseg.weights.load import load_model


@dataclass
class DistillOptions:
    iters: int = 1000
    minutes: float = 0.0  # stop after this long (0: off) and write the model, as train's time limit does
    lr: float = 1e-3  # AdamW, for the mask head
    batch_size: int = 4
    roi_score: float = 0.3  # the teacher's detections at or above this score are the training RoIs
    held_out_fraction: float = 0.1  # pictures kept back to measure mask IoU against the teacher
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 20
    output_dir: str = "runs/distill"


@dataclass
class DistillResult:
    run_dir: Path
    out: Path
    iterations: int
    mask_iou: float | None  # mean IoU of the student's masks against the teacher's (score >= 0.5), held back
    held_out: int
    people_compared: int = 0
    skipped_images: list[str] = field(default_factory=list)

    def report(self) -> str:
        iou = "-" if self.mask_iou is None else f"{self.mask_iou:.3f}"
        return (f"distilled {self.out} in {self.iterations} iterations (run {self.run_dir})\n"
                f"mask IoU against the teacher on {self.held_out} held-back pictures ({self.people_compared} "
                f"people): {iou}\ntrunks: one (model.mask.trunk=shared); boxes and keypoints are the teacher's\n"
                + (f"skipped {len(self.skipped_images)} unreadable pictures: {', '.join(self.skipped_images[:5])}\n"
                   if self.skipped_images else ""))


def list_pictures(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder}: no such folder of pictures")
    found = list_image_files(folder)
    if not found:
        raise FileNotFoundError(f"--images {folder}: no pictures in it ({', '.join(sorted(IMAGE_EXTS))}); "
                                "distillation needs pictures like the ones the model will see, no labels")
    return found


def load_teacher(weights: str | Path) -> tuple[PoseSegModel, Config]:
    teacher, cfg = load_model(weights)
    if teacher.mask_head is None:
        raise ValueError(f"--teacher {weights} has no mask head (model.heads={cfg.model.heads}): there are no "
                         "masks to distil")
    if teacher.mask_trunk is None:
        raise ValueError(f"--teacher {weights} already reads one trunk (model.mask.trunk=shared): nothing to fold; "
                         "give a two-trunk model, e.g. one made by `poseseg convert-weights KEYPOINT MASK`")
    return teacher, cfg


def student_from(teacher: PoseSegModel, cfg: Config) -> PoseSegModel:
    """The teacher without its mask trunk; everything else copied (the mask head starts from the teacher's)."""
    student = build_model(cfg)
    student.load_state_dict({k: v for k, v in teacher.state_dict().items() if not k.startswith("mask_trunk.")})
    student.keypoint_schema = teacher.keypoint_schema
    return student.eval()


def distill(teacher_weights: str | Path | None = None, images: str | Path | None = None,
            out: str | Path | None = None, *, options: DistillOptions | None = None,
            overrides: list[str] | None = None, resume: str | Path | None = None, quiet: bool = False) -> DistillResult:
    """Train the student's mask head for ``options.iters`` (or until ``options.minutes``), write ``out`` (a
    one-trunk checkpoint) and ``out``.report.txt. ``resume``: the run folder (or a checkpoint) of a distill
    that was stopped before it wrote ``out``; teacher, pictures, output and options come from it."""
    state = None
    if resume is not None:
        path = Path(resume) if Path(resume).is_file() else ckpt.latest_good_checkpoint(resume)
        if path is None:
            raise FileNotFoundError(f"nothing to resume in {resume}: no model_NNNNNNN.pt checkpoint there")
        state = load_checkpoint(path)
        if "distill" not in state:
            raise ValueError(f"{path} is not a distill checkpoint (resume training runs with `poseseg train --resume`)")
        job = state["distill"]
        teacher_weights, images, out = job["teacher"], job["images"], job["out"]
        options = DistillOptions(**{**job["options"], **({} if options is None else _changed(options))})
        run_dir = path.parent
    elif teacher_weights is None or images is None or out is None:
        raise ValueError("distill needs --teacher, --images and --out (or --resume RUN_DIR)")
    options = options or DistillOptions()
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"--out {out} exists; nothing is overwritten: choose another path")
    pictures = list_pictures(images)
    teacher, teacher_cfg = load_teacher(teacher_weights)
    cfg = config_from_dict(teacher_cfg.to_dict())  # the teacher's config, one trunk
    cfg.model.mask.trunk = "shared"
    overrides = list((state["distill"]["overrides"] if state else overrides) or [])
    apply_overrides(cfg, overrides)
    student = student_from(teacher, cfg)
    trained = [p for n, p in student.named_parameters() if n.startswith(("mask_head.", "mask_pooler."))]
    optimizer = torch.optim.AdamW(trained, lr=options.lr, weight_decay=0.0)
    order = np.random.default_rng(options.seed).permutation(len(pictures))
    held = max(1, round(options.held_out_fraction * len(pictures))) if len(pictures) >= 2 else 0
    held_out, train_set = [pictures[i] for i in order[:held]], [pictures[i] for i in order[held:]]
    start = 0
    if state is not None:
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
    else:
        run_dir = new_run_dir(options.output_dir)
    job = {"teacher": str(teacher_weights), "images": str(images), "out": str(out), "options": asdict(options),
           "overrides": overrides}
    logger = RunLogger(run_dir, total_iters=options.iters, start_iter=start, enabled=not quiet)
    logger.message(f"distilling {teacher_weights} into one trunk: {len(train_set)} pictures to learn from, "
                   f"{len(held_out)} held back; run folder {run_dir}")
    skipped: set[Path] = set()
    began = time.perf_counter()
    iteration = start
    while iteration < options.iters:
        if options.minutes and time.perf_counter() - began > options.minutes * 60:
            logger.message(f"--minutes {options.minutes:g} reached at iteration {iteration}")
            break
        batch = [train_set[(iteration * options.batch_size + j) % len(train_set)] for j in range(options.batch_size)]
        step_start = time.perf_counter()
        loss = _step(teacher, student, _read(batch, skipped, len(train_set)), optimizer, options.roi_score)
        iteration += 1
        logger.step()
        if loss is not None and (iteration % options.log_every == 0 or iteration == options.iters):
            logger.log(iteration, {"loss_mask_distill": loss, "lr": options.lr,
                                   "time_s": time.perf_counter() - step_start})
        if iteration % options.checkpoint_every == 0 or iteration == options.iters:
            _save(run_dir / ckpt.checkpoint_name(iteration), student, optimizer, iteration, cfg, job)
    logger.close()
    if iteration % options.checkpoint_every != 0 and iteration != options.iters:
        _save(run_dir / ckpt.checkpoint_name(iteration), student, optimizer, iteration, cfg, job)
    iou, people = mask_iou_against_teacher(teacher, student, _read(held_out, skipped, None))
    result = DistillResult(run_dir=run_dir, out=out, iterations=iteration, mask_iou=iou, held_out=len(held_out),
                           people_compared=people, skipped_images=sorted(str(p) for p in skipped))
    save_checkpoint(out, {"model": student.state_dict(), "config": cfg.to_dict(),
                          "keypoint_schema": student.keypoint_schema, "distilled_from": str(teacher_weights),
                          "distill_report": {"iterations": iteration, "mask_iou": iou, "held_out": len(held_out)}})
    out.with_name(out.name + ".report.txt").write_text(result.report())
    return result


def _changed(options: DistillOptions) -> dict:
    """The fields a resumed run takes from the command line: those not at their defaults."""
    default = asdict(DistillOptions())
    return {k: v for k, v in asdict(options).items() if v != default[k]}


def _read(paths: list[Path], skipped: set[Path], total: int | None) -> list[torch.Tensor]:
    """Pictures as (3, H, W) floats; unreadable ones are skipped and remembered (an error once all are)."""
    tensors = []
    for p in paths:
        if p in skipped:
            continue
        try:
            tensors.append(rgb_to_tensor(load_image_rgb(p)))
        except ImageReadError as e:
            skipped.add(p)
            print(f"warning: skipping {p}: {e.reason}", file=sys.stderr)
    if total is not None and len(skipped) >= total:
        raise ValueError(f"none of the {total} pictures to learn from could be read (e.g. {sorted(skipped)[0]}); "
                         "give a folder of readable JPEG/PNG pictures")
    return tensors


def _step(teacher: PoseSegModel, student: PoseSegModel, images: list[torch.Tensor], optimizer,
          roi_score: float) -> float | None:
    """One update of the student's mask head towards the teacher's masks at the teacher's boxes."""
    if not images:
        return None
    rois = teacher.predict_rois(images, keep_features=True)  # the trunk's features are the student's too
    keep = [d["scores"] >= roi_score for d in rois.detections]
    boxes = [d["boxes"][k] for d, k in zip(rois.detections, keep)]
    if sum(len(b) for b in boxes) == 0:
        return None
    target = torch.cat([d["mask_probs"][k] for d, k in zip(rois.detections, keep)])[:, 0]  # (R, M, M)
    labels = torch.cat([d["labels"][k] for d, k in zip(rois.detections, keep)])  # (R,)
    student.mask_head.train()
    logits = student.mask_head(student.mask_pooler(rois.features, boxes, rois.resized_sizes))  # (R, classes, M, M)
    loss = F.binary_cross_entropy_with_logits(logits[torch.arange(len(labels)), labels], target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    student.mask_head.eval()
    return float(loss.detach())


@torch.no_grad()
def mask_iou_against_teacher(teacher: PoseSegModel, student: PoseSegModel, images: list[torch.Tensor]) -> tuple[float | None, int]:
    """Mean IoU of the student's masks against the teacher's, person by person (score >= 0.5, the same boxes)."""
    ious = []
    for image in images:
        size = tuple(image.shape[-2:])
        want = postprocess(teacher.predict_rois([image]), masks="boxes", score_thresh=0.5)[0]
        got = postprocess(student.predict_rois([image]), masks="boxes", score_thresh=0.5)[0]
        a, b = masks_to_image(want["box_masks"], size), masks_to_image(got["box_masks"], size)
        for x, y in zip(a, b):
            union = (x | y).sum()
            ious.append(1.0 if union == 0 else float((x & y).sum() / union))
    return (float(np.mean(ious)) if ious else None), len(ious)


def _save(path: Path, student: PoseSegModel, optimizer, iteration: int, cfg: Config, job: dict) -> None:
    save_checkpoint(path, {"model": student.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
                           "config": cfg.to_dict(), "keypoint_schema": student.keypoint_schema, "distill": job})
