"""Pretrained weights: named weights (torch.hub), torchvision / Detectron2 / ImageNet conversion,
safe pickle loading, and keypoint-schema transfer for fine-tuning."""
from poseseg.weights.convert import convert_files
from poseseg.weights.finetune import config_from_weights, init_from_weights
from poseseg.weights.hub import NAMED, describe_named, is_named, resolve_named, resolve_weights
from poseseg.weights.report import Conversion, ConversionReport, apply_conversion
from poseseg.weights.safe_pickle import UnsafePickleError, safe_load_pickle
from poseseg.weights.schema_transfer import match_schemas, transfer_keypoint_channels
from poseseg.weights.torchvision import convert_torchvision, from_torchvision, load_torchvision

__all__ = ["NAMED", "Conversion", "ConversionReport", "UnsafePickleError", "apply_conversion",
           "config_from_weights", "convert_files", "convert_torchvision", "describe_named", "from_torchvision",
           "init_from_weights", "is_named", "load_torchvision", "match_schemas", "resolve_named", "resolve_weights",
           "safe_load_pickle", "transfer_keypoint_channels"]
