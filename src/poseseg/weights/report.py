"""What a weight conversion did: every source key used or skipped (and why), every parameter of
ours left at its initialisation. One place loads converted tensors into a model and checks shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Conversion:
    """Converted tensors under our names, with the source key each came from and the keys skipped."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # our key -> tensor
    sources: dict[str, str] = field(default_factory=dict)  # our key -> source key
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source key, why)
    config_values: list[tuple[str, str, object]] = field(default_factory=list)  # (source key, config key, value)
    notes: list[str] = field(default_factory=list)  # what a reader must know, e.g. which trunk each head reads

    def add(self, source_key: str, our_key: str, value: torch.Tensor) -> None:
        self.tensors[our_key] = value
        self.sources[our_key] = source_key

    def skip(self, source_key: str, why: str) -> None:
        self.skipped.append((source_key, why))

    def merge(self, other: "Conversion") -> None:
        self.tensors.update(other.tensors)
        self.sources.update(other.sources)
        self.skipped.extend(other.skipped)
        self.config_values.extend(other.config_values)
        self.notes.extend(other.notes)


@dataclass
class ConversionReport:
    """used: (source key, our key); skipped: (source key, why); left_at_init: our keys no source filled;
    unexpected: (source key, our key) converted but absent from the model."""

    used: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> list[str]:
        return [ours for _, ours in self.used if not ours.startswith("config ")]

    @property
    def missing(self) -> list[str]:
        return list(self.left_at_init)

    def to_dict(self) -> dict:
        return {"used": [list(p) for p in self.used], "skipped": [list(p) for p in self.skipped],
                "left_at_init": list(self.left_at_init), "unexpected": [list(p) for p in self.unexpected],
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict) -> "ConversionReport":
        return cls(used=[tuple(p) for p in data.get("used", [])], skipped=[tuple(p) for p in data.get("skipped", [])],
                   left_at_init=list(data.get("left_at_init", [])),
                   unexpected=[tuple(p) for p in data.get("unexpected", [])], notes=list(data.get("notes", [])))

    def summary(self) -> str:
        return (f"{len(self.used)} source tensors used, {len(self.skipped)} skipped, "
                f"{len(self.left_at_init)} of our tensors left at their initialisation")

    def format(self) -> str:
        """The full report: every key, one per line."""
        lines = [self.summary(), *self.notes, "", f"used ({len(self.used)}):"]
        lines += [f"  {src} -> {ours}" for src, ours in self.used]
        lines += ["", f"skipped ({len(self.skipped)}):"] + [f"  {src}: {why}" for src, why in self.skipped]
        lines += ["", f"left at initialisation ({len(self.left_at_init)}):"] + [f"  {k}" for k in self.left_at_init]
        if self.unexpected:
            lines += ["", f"converted but not in the model ({len(self.unexpected)}):"]
            lines += [f"  {src} -> {ours}" for src, ours in self.unexpected]
        return "\n".join(lines) + "\n"


def apply_conversion(model: nn.Module, conversion: Conversion, *, source: str) -> ConversionReport:
    """Load ``conversion`` into ``model`` (strict=False) after checking every shape.

    A shape mismatch is a ValueError naming the source key, our key and both shapes.
    """
    own = model.state_dict()
    report = ConversionReport(skipped=list(conversion.skipped), notes=list(conversion.notes),
                              used=[(src, f"config {key}") for src, key, _ in conversion.config_values])
    for ours, value in conversion.tensors.items():
        src = conversion.sources.get(ours, ours)
        if ours not in own:
            report.unexpected.append((src, ours))
        elif own[ours].shape != value.shape:
            raise ValueError(f"{source}: '{src}' has shape {tuple(value.shape)} but our '{ours}' has shape "
                             f"{tuple(own[ours].shape)}; build the model with a matching config "
                             "(e.g. --config paper_regular for ResNet-50-FPN detectors)")
        else:
            report.used.append((src, ours))
    loaded = {ours for _, ours in report.used if not ours.startswith("config ")}
    report.left_at_init = [k for k in own if k not in loaded]
    model.load_state_dict({k: conversion.tensors[k] for k in loaded}, strict=False)
    return report
