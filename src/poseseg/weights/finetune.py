"""Start training from a checkpoint or named weights (``train --init-weights W``): weights only, keypoint
channels matched by joint name when the dataset's schema differs from the checkpoint's."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from poseseg.config import Config, apply_overrides, config_from_dict
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
    result = model.load_state_dict(state, strict=False)
    if len(result.missing_keys) == len(own):
        raise ValueError(f"--init-weights {weights} shares no tensor with this model; is it a poseseg checkpoint? "
                         "(torchvision / Detectron2 / ImageNet files: convert them with `poseseg convert-weights`)")
    loaded = len(own) - len(result.missing_keys)
    log.append(f"--init-weights {weights}: {loaded} of {len(own)} tensors loaded"
               + (f", {len(result.missing_keys)} left at initialisation" if result.missing_keys else "")
               + (f", {len(result.unexpected_keys)} not in this model" if result.unexpected_keys else ""))
    return log
