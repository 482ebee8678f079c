"""``effnet.convert``: state dicts between effnet and upstream names, both ways.

``to_timm(model)`` / ``to_torchvision(model)`` give ``model``'s weights in timm's or torchvision's
names (``timm_name`` / ``torchvision_name`` say which upstream model takes them);
``convert_state_dict`` reads timm, torchvision and lukemelas state dicts back into effnet names.
"""

from effnet.weights.convert import convert_state_dict, detect_format, to_lukemelas
from effnet.weights.export_keys import timm_name, to_timm, to_torchvision, torchvision_name

__all__ = [
    "convert_state_dict",
    "detect_format",
    "timm_name",
    "to_lukemelas",
    "to_timm",
    "to_torchvision",
    "torchvision_name",
]
