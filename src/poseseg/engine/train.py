"""The training loop: one process or many (torchrun + DDP), exact resume, periodic evaluation, and a
clean stop on preemption, a lost rank or a dead data worker (see :mod:`poseseg.engine.faults`)."""
from __future__ import annotations

import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from poseseg.config import Config, apply_overrides, config_from_dict
from poseseg.device import resolve_device
from poseseg.engine import checkpoint as ckpt
from poseseg.engine import distributed as dist
from poseseg.engine import faults
from poseseg.engine.evaluate import evaluate, format_metrics
from poseseg.engine.optim import apply_freeze, build_optimizer, scaled_lr
from poseseg.engine.run_log import RunLogger, new_run_dir
from poseseg.engine.schedule import LRSchedule, TrainingClock, in_finishing_phase
from poseseg.modeling.model import PoseSegModel, build_model
from poseseg.weights.checkpoint_file import load_checkpoint, save_checkpoint
from poseseg.weights.finetune import init_from_weights


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    final_checkpoint: Path
    metrics: dict | None = None
    model: PoseSegModel | None = None
    skipped_images: list[str] = field(default_factory=list)
    skipped_steps: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_resume(path: str | Path) -> Path:
    """A checkpoint file, or the newest complete checkpoint in a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    latest = ckpt.latest_good_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"nothing to resume in {path}: no model_NNNNNNN.pt checkpoint there")
    return latest


def config_for_resume(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a run was started with (saved in its checkpoint), plus any overrides."""
    return apply_overrides(config_from_dict(load_checkpoint(resolve_resume(path))["config"]), overrides)


def build_datasets(cfg: Config, model_keypoints: int | None, load_masks: bool = True):
    """Training and (optional) validation datasets with the keypoint schema checked against the model."""
    from poseseg.data.coco import CocoPeopleDataset, require_image_folder
    from poseseg.data.transforms import build_transforms

    d = cfg.data
    if not d.train_json or not d.train_images:
        raise ValueError("no training data: set --data TRAIN_JSON and --images DIR "
                         "(data.train_json, data.train_images)")
    common = dict(category=d.category, max_image_pixels=d.max_image_pixels, num_keypoints=model_keypoints,
                  oks_sigmas=d.oks_sigmas or None, flip_pairs=d.flip_pairs or None, load_masks=load_masks,
                  on_bad_image="raise")
    train_set = CocoPeopleDataset(d.train_json, d.train_images, keep_empty=d.keep_empty, **common)
    require_image_folder(train_set, flag="--images (data.train_images)")
    perm = train_set.schema.flip_permutation() if train_set.schema is not None else None
    transforms = build_transforms(sizes=d.train_sizes, max_size=d.max_size, flip_prob=d.flip_prob,
                                  flip_permutation=perm, color_jitter=d.color_jitter)
    val_set = None
    if d.val_json:
        val_set = CocoPeopleDataset(d.val_json, d.val_images or d.train_images, keep_empty=True, **common)
        require_image_folder(val_set, flag="--val-images (data.val_images)", allow_empty=True)
    return train_set, val_set, transforms, train_set.schema


def train(cfg: Config, *, resume: str | Path | None = None, quiet: bool = False) -> TrainResult:
    device = resolve_device(cfg.train.device)
    dist.init_from_env(device)
    rank, world = dist.rank(), dist.world_size()
    t = cfg.train

    seed_everything(t.seed + rank)
    model = build_model(cfg)
    has_keypoints = model.keypoint_head is not None
    train_set, val_set, transforms, schema = build_datasets(
        cfg, model.keypoint_head.num_keypoints if has_keypoints else None, load_masks=model.mask_head is not None)
    model.keypoint_schema = schema.to_dict() if schema is not None else None

    # before the run folder exists: a bad file leaves no config-only folder behind
    init_log = init_from_weights(model, t.init_weights) if t.init_weights else []
    # --- run folder (created once the data and weights are known to load) and starting point
    resume_path = resolve_resume(resume) if resume else None
    if resume_path is not None:
        run_dir = resume_path.parent
    else:
        run_dir = dist.broadcast_object(new_run_dir(t.output_dir, t.name) if dist.is_main() else None)
    if dist.is_main():
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        for stale in ckpt.remove_stale_temp_files(run_dir):
            print(f"removed {stale.name}, a checkpoint write interrupted by a kill", flush=True)
    frozen = apply_freeze(model, t.freeze)
    model.to(device)
    optimizer = build_optimizer(model, t, world)
    schedule = LRSchedule(optimizer, t)
    clock = TrainingClock(t)
    start_iter = 0
    if resume_path is not None:
        state = load_checkpoint(resume_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        clock.load_state_dict(state.get("schedule", {}))  # seconds trained so far (older checkpoints: none)
        start_iter = int(state["iteration"])
        rng_states = state["rng"]
        ckpt.restore_rng_state(rng_states[rank] if rank < len(rng_states) else rng_states[0])
    net = _wrap(model, device)
    loader = iter(_train_loader(train_set, transforms, cfg, start_iter))
    logger = RunLogger(run_dir, total_iters=t.iters, start_iter=start_iter, enabled=dist.is_main() and not quiet,
                       remaining_s=clock.budget_s - clock.elapsed() if clock.by_time else None)
    for line in init_log:
        logger.message(line)
    if frozen:
        logger.message(f"train.freeze={t.freeze}: {len(frozen)} backbone tensors frozen")
    length = f"{t.time_limit_minutes:g} minutes (at most {t.iters} iterations)" if clock.by_time \
        else f"iterations {start_iter}..{t.iters}"
    logger.message(f"run folder {run_dir}; {len(train_set)} training images; lr {scaled_lr(t, world):.4g} "
                   f"for {t.batch_size} x {world} images per step; {length}")

    use_amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    skipped_images: list[str] = []
    skipped_steps = 0
    metrics = None
    net.train()
    deadline = time.perf_counter() + 60 * t.time_limit_minutes if t.time_limit_minutes > 0 and not clock.by_time \
        else None
    finishing = False
    done = start_iter
    peers = dist.all_gather_objects(faults.process_address())  # to name a rank that dies
    preemption = faults.PreemptionWatch(t.preempt_signals, t.preempt_grace_s)
    try:
        with preemption, faults.explain_failures(run_dir, rank=rank, peers=peers) as position:
            end = time.perf_counter()
            for iteration in range(start_iter, t.iters):
                position.iteration = iteration
                if clock.by_time and _all_agree(clock.finished(iteration), device):
                    logger.message(f"time budget of {t.time_limit_minutes:g} minutes used after {iteration} "
                                   "iterations")
                    break
                progress = clock.progress(iteration)
                if clock.by_time:
                    progress = _agreed_max(progress, device)  # one schedule on every rank
                if not finishing and in_finishing_phase(t, progress):
                    finishing = True
                    frozen = apply_freeze(model, t.finish_freeze)
                    net = _wrap(model, device)  # DDP must not wait for gradients of the frozen parameters
                    logger.message(f"finishing phase from iteration {iteration} (progress {progress:.2f}): "
                                   f"train.finish_freeze={t.finish_freeze} holds {len(frozen)} tensors fixed")
                schedule.apply(progress, iteration)
                images, targets = faults.next_batch(loader)
                for tg in targets:
                    skipped_images.extend(tg.pop("skipped_images", []))
                images = [img.to(device, non_blocking=True) for img in images]
                targets = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in tg.items()}
                           for tg in targets]
                data_time = time.perf_counter() - end
                losses, skipped = _train_step(net, model, optimizer, scaler, images, targets, t=t, device=device,
                                              use_amp=use_amp, iteration=iteration, logger=logger)
                if skipped:
                    skipped_steps = _count_skipped(skipped_steps, t.max_skipped_steps, iteration, skipped,
                                                   _loss_terms(losses))
                done = iteration + 1  # a skipped step still counts: the schedule and the sampler moved on
                step_time = time.perf_counter() - end

                if not skipped and (done % t.log_every == 0 or done == t.iters or done == start_iter + 1):
                    values = dist.reduce_mean({**{k: v.item() for k, v in losses.items()},
                                               "loss": sum(losses.values()).item()})
                    values.update(lr=optimizer.param_groups[0]["lr"], time_s=step_time, data_time_s=data_time,
                                  memory_mb=_memory_mb(device), skipped_images=len(skipped_images))
                    logger.log(done, values)
                if done % t.checkpoint_every == 0 and done < t.iters:
                    save_s = _save(run_dir / ckpt.checkpoint_name(done), model, optimizer, clock, done, cfg)
                    if dist.is_main():
                        ckpt.prune_checkpoints(run_dir, t.keep_checkpoints)
                        if warning := preemption.budget_warning(step_time, save_s):
                            logger.message(warning)
                if t.eval_every and val_set is not None and done % t.eval_every == 0 and done < t.iters:
                    dist.broadcast_buffers(model)
                    metrics = evaluate(model, val_set, device=device, batch_size=cfg.eval.batch_size)
                    logger.log(done, {f"{k}/{n}": v for k, s in metrics.items() for n, v in s.items()
                                      if v is not None})
                    logger.message(format_metrics(metrics))
                    net.train()
                logger.step()
                end = time.perf_counter()
                if done < t.iters:
                    preempted, out_of_time = _all_agree_each(
                        [preemption.requested, deadline is not None and end > deadline], device)
                    if preempted:  # every rank stops after the same step and writes one checkpoint
                        _save(run_dir / ckpt.checkpoint_name(done), model, optimizer, clock, done, cfg)
                        raise faults.Preempted(
                            f"{preemption.received or 'a preemption signal'} received: stopped after iteration "
                            f"{done} of {t.iters}. {faults.resume_hint(run_dir)}", quiet=not dist.is_main())
                    if out_of_time:
                        logger.message(f"train.time_limit_minutes={t.time_limit_minutes:g} reached after "
                                       f"iteration {done} of {t.iters}: saving and evaluating now")
                        break

            position.iteration = done
            dist.broadcast_buffers(model)  # one model on every rank for the evaluation below
            final = run_dir / "model_final.pt"
            _save(final, model, optimizer, clock, done, cfg)
            _save(run_dir / ckpt.checkpoint_name(done), model, optimizer, clock, done, cfg)
            if dist.is_main():
                ckpt.prune_checkpoints(run_dir, t.keep_checkpoints)
            if val_set is not None and _all_agree(preemption.requested, device):
                logger.message(f"{preemption.received} received: the run is complete ({final}); the final "
                               f"evaluation is skipped (`poseseg eval --weights {final}` runs it)")
            elif val_set is not None:
                metrics = evaluate(model, val_set, device=device, out_dir=run_dir, batch_size=cfg.eval.batch_size)
                logger.message(format_metrics(metrics))
            if skipped_steps:
                logger.message(f"{skipped_steps} of {done - start_iter} steps were skipped (non-finite loss or "
                               f"gradient; train.nonfinite=skip)")
            all_skipped = sorted({s for part in dist.all_gather_objects(skipped_images) for s in part})
            if all_skipped:
                logger.message(f"{len(all_skipped)} unreadable training image(s) were skipped: "
                               + "; ".join(all_skipped[:10]))
    except BaseException:
        logger.close()
        if resume_path is None and dist.is_main():
            _remove_if_no_checkpoint(run_dir)
        raise
    logger.close()
    dist.barrier()
    return TrainResult(run_dir=run_dir, iterations=done, final_checkpoint=final, metrics=metrics,
                       skipped_images=all_skipped, skipped_steps=skipped_steps, model=model)


def _train_step(net, model: PoseSegModel, optimizer, scaler, images, targets, *, t, device: torch.device,
                use_amp: bool, iteration: int, logger) -> tuple[dict, str]:
    """One optimizer step. Returns (losses, "") or, for a step skipped under train.nonfinite=skip,
    (losses, "loss" | "gradient"); a skipped step leaves weights, optimizer state and BatchNorm
    statistics as they were. Under train.nonfinite=stop a non-finite loss ends the run."""
    saved_buffers = _snapshot_buffers(model) if t.nonfinite == "skip" else None
    with torch.autocast(device.type, enabled=use_amp):
        losses = net(images, targets)
    total = sum(losses.values())
    skipped = ""
    if not _all_finite(total, device):
        skipped = "loss"
    else:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if t.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad_norm)
        if not use_amp and t.nonfinite == "skip" and not _all_finite(_grad_sum(model, device), device):
            skipped = "gradient"  # a finite loss with an inf/NaN gradient
    if skipped:
        terms = _loss_terms(losses)
        if t.nonfinite == "stop":
            raise FloatingPointError(f"non-finite {skipped} at iteration {iteration}: {terms}. Lower "
                                     "train.base_lr, set train.clip_grad_norm, or train.nonfinite=skip to skip "
                                     "such steps")
        logger.message(f"skipping iteration {iteration}: non-finite {skipped} ({terms})")
        _restore_buffers(model, saved_buffers)
        optimizer.zero_grad(set_to_none=True)
        return losses, skipped
    scaler.step(optimizer)
    scaler.update()
    return losses, ""


def _remove_if_no_checkpoint(run_dir: Path) -> None:
    """A fresh run that failed before its first checkpoint leaves nothing behind: its folder held
    only the config and the log of a run that cannot be resumed."""
    if run_dir.is_dir() and not ckpt.list_checkpoints(run_dir) and not (run_dir / "model_final.pt").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"removed the run folder {run_dir}: the run stopped before its first checkpoint", file=sys.stderr)


def _train_loader(train_set, transforms, cfg: Config, start_iter: int):
    from poseseg.data.loader import build_train_loader

    return build_train_loader(train_set, transforms, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                              rank=dist.rank(), world_size=dist.world_size(), start_iter=start_iter,
                              num_workers=cfg.data.num_workers, ignore_in_workers=tuple(cfg.train.preempt_signals))


def _wrap(model: PoseSegModel, device: torch.device):
    """DistributedDataParallel over the parameters that train now; the model itself in one process."""
    if not dist.is_distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _agreed_max(value: float, device: torch.device) -> float:
    """The largest value over the ranks (the same number on every process)."""
    if not dist.is_distributed():
        return value
    import torch.distributed as tdist

    tensor = torch.tensor([value], device=device, dtype=torch.float64)
    tdist.all_reduce(tensor, op=tdist.ReduceOp.MAX)
    return float(tensor.item())


def _snapshot_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def _restore_buffers(model: torch.nn.Module, saved: dict[str, torch.Tensor] | None) -> None:
    if saved is None:
        return
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(saved[name])


def _grad_sum(model: torch.nn.Module, device: torch.device) -> torch.Tensor:
    """One number that is finite only when every gradient is."""
    grads = [p.grad.detach().float().sum() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).sum() if grads else torch.zeros((), device=device)


def _count_skipped(skipped: int, limit: int, iteration: int, what: str, terms: str) -> int:
    """Count one skipped step; past ``train.max_skipped_steps`` stop the run with the loss table."""
    skipped += 1
    if limit and skipped > limit:
        raise FloatingPointError(f"{skipped} steps skipped for a non-finite {what} (train.max_skipped_steps={limit}); "
                                 f"last at iteration {iteration}: {terms}. The run is not learning: lower "
                                 "train.base_lr or set train.clip_grad_norm")
    return skipped


def _loss_terms(losses: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())


def _all_finite(total: torch.Tensor, device: torch.device) -> bool:
    """The same answer on every rank, so a NaN on one process stops or skips all of them together."""
    return not _all_agree(not bool(torch.isfinite(total.detach())), device)


def _all_agree(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any rank (a NaN or a time limit stops all processes together)."""
    return _all_agree_each([flag], device)[0]


def _all_agree_each(flags: list[bool], device: torch.device) -> list[bool]:
    """:func:`_all_agree` for several flags in one collective."""
    value = torch.tensor([float(f) for f in flags], device=device)
    if dist.is_distributed():
        import torch.distributed as tdist

        tdist.all_reduce(value, op=tdist.ReduceOp.MAX)
    return [bool(v > 0) for v in value.tolist()]


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _save(path: Path, model: PoseSegModel, optimizer, clock: TrainingClock, iteration: int, cfg: Config) -> float:
    """Write a checkpoint (rank 0) that resumes exactly; returns the seconds it took."""
    start = time.perf_counter()
    rng = dist.all_gather_objects(ckpt.capture_rng_state())  # every rank's streams: exact resume
    if dist.is_main():
        save_checkpoint(path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": clock.state_dict(),
            "iteration": iteration, "rng": rng, "config": cfg.to_dict(), "keypoint_schema": model.keypoint_schema,
        })
    dist.barrier()
    return time.perf_counter() - start

