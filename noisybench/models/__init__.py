"""Model zoo: ``MODELS`` (name -> builder) and ``build_model``.

Importing the modules below registers their models.
"""

from noisybench.models.build import MODELS, build_model, check_model, model_options, papers_init_
from noisybench.models import cnn, resnet  # noqa: F401  (registration)

__all__ = ["MODELS", "build_model", "check_model", "model_options", "papers_init_"]
