"""Start training from a checkpoint or named weights (``train --init-weights W``): weights only, keypoint
channels matched by joint name when the dataset's schema differs from the checkpoint's."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from poseseg.config import Config, apply_overrides, config_from_dict
from poseseg.ops import DeformConv2d
from poseseg.weights.checkpoint_file import model_state_from
from poseseg.weights.load import load_weights_file
from poseseg.weights.schema_transfer import transfer_keypoint_channels


def config_from_weights(weights: str | Path, overrides: list[str] | None = None) -> Config:
    """The config saved with ``weights`` (a checkpoint or a name) plus ``key=value`` overrides: the model a
    fine-tuning run builds when no --config is given."""
    payload = load_weights_file(weights)
    if not isinstance(payload, dict) or "config" not in payload:
        raise ValueError(f"--init-weights {weights} holds no config (a bare state dict?): pass --config with the "
                         "preset whose model it fits")
    cfg = config_from_dict(payload["config"])
    cfg.train.init_weights = str(weights)
    return apply_overrides(cfg, overrides)


def init_from_weights(model: nn.Module, weights: str | Path) -> list[str]:
    """Load the weights of a checkpoint / named weights into ``model`` (no optimizer, iteration or schedule);
    returns the lines for the start-up log. ``model.keypoint_schema`` is the dataset's schema."""
    payload = load_weights_file(weights)
    state = dict(model_state_from(payload))
    # a converted file's tensors that no source filled (an ImageNet start's heads) are someone else's random
    # init: the new model keeps its own instead
    untrained = set((payload.get("conversion_report") or {}).get("left_at_init", [])) if isinstance(payload, dict) else set()
    state = {k: v for k, v in state.items() if k not in untrained}
    # a fitted keypoint score calibration describes the old model's scores, not the fine-tuned one's
    state = {k: v for k, v in state.items() if not k.startswith("keypoint_head.score_calibration.")}
    own = model.state_dict()
    log = []
    source_schema = payload.get("keypoint_schema") if isinstance(payload, dict) else None
    target_schema = getattr(model, "keypoint_schema", None)
    if (getattr(model, "keypoint_head", None) is not None and source_schema and target_schema
            and "keypoint_head.heatmap_deconv.weight" in state
            and list(source_schema["names"]) != list(target_schema["names"])):
        state, match = transfer_keypoint_channels(state, own, list(source_schema["names"]),
                                                  list(target_schema["names"]))
        log.append(f"--init-weights {weights}: {match.message()}")
    mismatched = [f"'{k}': checkpoint {tuple(v.shape)} vs ours {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"--init-weights {weights} does not fit this model's config: {'; '.join(mismatched[:3])}"
                         f"{' ...' if len(mismatched) > 3 else ''}. Start without --config to use the checkpoint's "
                         "own config, or give the preset it was trained with")
    # DeformConv2d keeps its own offset branch when a plain conv's weights load into it, so load_state_dict
    # does not list those tensors as missing: what is new is what the checkpoint does not hold
    new = [k for k in own if k not in state]
    if len(new) == len(own):
        raise ValueError(f"--init-weights {weights} shares no tensor with this model; is it a poseseg checkpoint? "
                         "(torchvision / Detectron2 / ImageNet files: convert them with `poseseg convert-weights`)")
    result = model.load_state_dict(state, strict=False)
    log.append(f"--init-weights {weights}: {len(own) - len(new)} of {len(own)} tensors loaded"
               + (f", {len(new)} new to this model, left at initialisation" if new else "")
               + (f", {len(result.unexpected_keys)} not in this model" if result.unexpected_keys else ""))
    log += describe_new_tensors(model, new)
    return log


def describe_new_tensors(model: nn.Module, new: list[str]) -> list[str]:
    """Log lines naming the tensors ``new`` to ``model`` (absent from the checkpoint it starts from). The offset
    branches of deformable convs whose main weight was loaded are named apart: those convs take a plain conv's
    weights and start at zero offsets, so at step 0 they compute exactly that plain conv."""
    if not new:
        return []
    missing = set(new)
    deform = [name for name, m in model.named_modules() if isinstance(m, DeformConv2d)
              and f"{name}.weight" not in missing]
    branches = {f"{name}.offset_conv.{p}": name for name in deform for p in ("weight", "bias")}
    from_plain = sorted({branches[k] for k in new if k in branches})
    other = [k for k in new if k not in branches]
    lines = []
    if from_plain:
        zero = not any(t.detach().any() for n in from_plain
                       for t in model.get_submodule(f"{n}.offset_conv").parameters())
        lines.append(f"  {len(from_plain)} deformable convs take their main weight (and bias) from the checkpoint's "
                     "plain convs; their offset branches are new"
                     + (" and start at zero, so each computes its plain conv at step 0"
                        if zero else "") + f": {', '.join(from_plain)}")
    if other:
        lines.append(f"  {len(other)} other tensors left at initialisation: {', '.join(other[:12])}"
                     + (" ..." if len(other) > 12 else ""))
    return lines
