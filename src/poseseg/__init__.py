"""poseseg: boxes, instance masks and body keypoints for every person, in one pass.

    cfg = poseseg.load_config("tiny", overrides=["model.keypoint.loss=ce"])
    model = poseseg.build_model(cfg)
    result = poseseg.Predictor("model_final.pt").predict("people.jpg")
"""
from poseseg import weights
from poseseg.config import Config, ConfigError, list_presets, load_config
from poseseg.modeling.model import PoseSegModel, build_model
from poseseg.predictor import Predictor

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "PoseSegModel", "Predictor", "build_model", "list_presets", "load_config",
           "weights"]
