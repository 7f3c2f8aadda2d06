"""Model zoo: the GroupNorm UNet (XTC/XDE/RNA) and timm-backbone dense models behind one registry.

Every model maps a batch dict to ``{domain: tensor}``; see :mod:`robust.models.base` for output encodings.
"""

from robust.models import dense, unet
from robust.models.base import DomainModel
from robust.models.registry import create_model, list_models, register_model, uncertainty_key
from robust.models.unet import UNet

__all__ = ["DomainModel", "UNet", "create_model", "dense", "list_models", "register_model", "uncertainty_key", "unet"]
