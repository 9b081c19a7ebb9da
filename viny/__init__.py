"""viny: reproduce and extend "Diminishing Returns in Self-Supervised Learning" (ViNy).

Importing the package registers the ``viny`` and ``viny_test`` models with timm.
"""

__version__ = "0.1.0"

from viny.model import ViNy, patch_tokens  # noqa: E402
from viny.pretrained import load_pretrained  # noqa: E402
from viny.registry import create_encoder  # noqa: E402  (registers the timm models)

__all__ = ["ViNy", "create_encoder", "patch_tokens", "load_pretrained", "__version__"]
