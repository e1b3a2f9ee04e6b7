"""A ready model from a weights file or name: the one loader that predict, eval, export and serve share.

A poseseg checkpoint carries its config and keypoint schema, so the file (or a name from
``poseseg weights list``, resolved by :mod:`poseseg.weights.hub`) is all that is needed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from poseseg.config import Config, apply_overrides, config_from_dict, load_config
from poseseg.modeling.model import PoseSegModel, build_model
from poseseg.weights.checkpoint_file import load_checkpoint, model_state_from
from poseseg.weights.hub import converted_dir, is_named, resolve_named, resolve_weights


def load_weights_file(weights: str | Path) -> dict:
    """The payload of a checkpoint path or named weights (downloaded and converted on first use). A cached
    conversion of named weights that no longer loads is ours to rebuild: it is converted again."""
    path = resolve_weights(weights)
    try:
        return load_checkpoint(path)
    except ValueError:
        if not is_named(weights) or path.parent != converted_dir():  # the user's own file: never deleted
            raise
    print(f"warning: {path}, the cached conversion of '{weights}', is corrupt: deleting it and converting the "
          "downloaded files again", file=sys.stderr)
    path.unlink()
    return load_checkpoint(resolve_named(str(weights)))


def load_model(weights: str | Path, *, config: str | Path | None = None,
               overrides: list[str] | None = None) -> tuple[PoseSegModel, Config]:
    """A model in eval mode from a poseseg checkpoint or named weights (``torchvision-coco``, see
    ``poseseg weights list``); the saved config unless ``config`` is given."""
    payload = load_weights_file(weights)
    if config is not None:
        cfg = load_config(config, overrides)
    elif isinstance(payload, dict) and "config" in payload:
        cfg = apply_overrides(config_from_dict(payload["config"]), overrides)
    else:
        raise ValueError(f"{weights} holds no config (a bare state dict?): pass --config / config= "
                         "with the preset it was trained with; torchvision / Detectron2 / ImageNet files: convert "
                         "them first with `poseseg convert-weights SRC... --out OUT.pt`")
    model = build_model(cfg)
    try:
        model.load_state_dict(model_state_from(payload))
    except RuntimeError as e:  # "Error(s) in loading state_dict ...:" then one line per tensor
        lines = str(e).splitlines()
        first = lines[min(1, len(lines) - 1)].strip()
        if config is None and overrides:
            raise ValueError(f"{weights} does not fit the model that the overrides {' '.join(overrides)} describe "
                             f"({first}): trained weights keep the shapes they were trained with; drop the "
                             f"overrides, or to change the model (e.g. another keypoint count) fine-tune it: "
                             f"poseseg train --init-weights {weights} --data ... with the overrides") from None
        raise ValueError(f"{weights} does not fit the config ({first}); pass the config it was trained with") from None
    model.keypoint_schema = payload.get("keypoint_schema") if isinstance(payload, dict) else None
    return model.eval(), cfg
