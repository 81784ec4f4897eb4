"""Label-noise injectors: one registered function per noise type, and the two entry points.

``check_noise(cfg_noise, dataset, num_classes)`` validates a noise config without reading data;
``make_noisy_labels(cfg_noise, clean, num_classes, dataset, images=None, root=None,
download=False)`` returns ``NoisyLabels`` (noisy, clean, flipped, realised_rate, transition).
"""
from noisybench.noise.base import NOISE, NoiseContext, NoisyLabels, check_noise, make_noisy_labels

# Importing the families registers their injectors in NOISE.
from noisybench.noise import asymmetric, human, instance, simple, symmetric  # noqa: E402,F401  isort: skip

__all__ = ["NOISE", "NoiseContext", "NoisyLabels", "check_noise", "make_noisy_labels"]
