"""Robust losses for learning with noisy labels, each exact to its paper's official code.

``LOSSES`` is the table (``python -m noisybench.losses`` prints it); ``build_loss`` resolves a
``conf/loss/*.yaml`` config, optionally through a paper preset, and validates it.
"""
from . import active, asymmetric, combined, dmi, passive, symmetric  # noqa: F401  (registration)
from .base import LOSSES, Loss, TrainingSettings
from .build import build_loss, loss_options, resolve_loss
from .presets import preset_names, preset_values

__all__ = ["LOSSES", "Loss", "TrainingSettings", "build_loss", "loss_options", "preset_names", "preset_values",
           "resolve_loss"]
