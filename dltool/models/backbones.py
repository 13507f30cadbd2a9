"""torchvision classification backbones by name (every model in torchvision's own registry), adapted to the
data set: the final layer is replaced for its classes, the first conv takes its channel count, and
`small_input` (resnet, vgg, mobilenet, efficientnet) turns the ImageNet stem (stride 2 or 4 before any
feature is learned) into one that keeps 32x32 or smaller images at full resolution.

Weights are optional (`model.weights: DEFAULT` or a torchvision weight name); they download into
torchvision's own cache (TORCH_HOME) and are loaded with weights_only=True after checking the sha256
prefix in the published file name. The pretrained tensors are kept aside so that the global initializer
cannot overwrite them: finetune.py loads them back after initialization.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.hub import get_dir
from torchvision import models

from dltool.catalog import BACKBONE_FAMILIES, backbone_family
from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models.layers import Shape, fmt
from dltool.models.macs import Measured, first_tensor, measure
from dltool.models.trace import BuiltModel, LayerRecord
from dltool.registry import Entry, unknown

log = logging.getLogger(__name__)


class Backbone(nn.Module):
    """A torchvision model under the name `layers`, so parameter names read like dltool's (layers.conv1...)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.layers = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.layers(x)


def new_conv(old: nn.Conv2d, in_ch: int, kernel: int | None = None, stride: int | None = None) -> nn.Conv2d:
    """A copy of old's geometry with another input channel count / kernel / stride (padding keeps 'same')."""
    k = kernel or old.kernel_size[0]
    pad = k // 2 if kernel else old.padding
    return nn.Conv2d(in_ch, old.out_channels, k, stride or old.stride, pad, bias=old.bias is not None)


def adapt_resnet(net: nn.Module, in_ch: int, classes: int, small: bool) -> list[str]:
    """Replace conv1 (and drop the stem max-pool for small images) and fc; return replaced module names."""
    fresh = ["fc"]
    if small:
        net.conv1, net.maxpool = new_conv(net.conv1, in_ch, kernel=3, stride=1), nn.Identity()
        fresh.append("conv1")
    elif in_ch != net.conv1.in_channels:
        net.conv1 = carry_weights(net.conv1, new_conv(net.conv1, in_ch))
    net.fc = nn.Linear(net.fc.in_features, classes)
    return fresh


def adapt_vgg(net: nn.Module, in_ch: int, classes: int, small: bool) -> list[str]:
    """First conv takes in_ch; small images: global average pool to 512 values instead of a 7x7 grid."""
    fresh = ["classifier.6"]
    if in_ch != net.features[0].in_channels:
        net.features[0] = carry_weights(net.features[0], new_conv(net.features[0], in_ch))
    if small:
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier[0] = nn.Linear(net.classifier[0].in_features // 49, net.classifier[0].out_features)
        fresh.append("classifier.0")
    net.classifier[6] = nn.Linear(net.classifier[6].in_features, classes)
    return fresh


def adapt_features_classifier(net: nn.Module, in_ch: int, classes: int, small: bool) -> list[str]:
    """MobileNet / EfficientNet: features[0][0] is the stride-2 stem conv, classifier[-1] the last layer."""
    last = len(net.classifier) - 1
    stem = net.features[0][0]
    if in_ch != stem.in_channels or small:
        net.features[0][0] = carry_weights(stem, new_conv(stem, in_ch, stride=1 if small else None))
    net.classifier[last] = nn.Linear(net.classifier[last].in_features, classes)
    return [f"classifier.{last}"]


def carry_weights(old: nn.Conv2d, new: nn.Conv2d) -> nn.Conv2d:
    """Keep a (pretrained) stem when only its channel count changes: average the RGB kernels (gray input) or
    tile them; a changed stride keeps the kernel as it is."""
    if old.weight.shape[2:] != new.weight.shape[2:]:
        return new
    with torch.no_grad():
        w = old.weight.mean(dim=1, keepdim=True) * 3 / new.in_channels  # (out, 1, k, k), same total response
        new.weight.copy_(w.expand(-1, new.in_channels, -1, -1))
        if new.bias is not None and old.bias is not None:
            new.bias.copy_(old.bias)
    return new


def adapt_generic(net: nn.Module, in_ch: int, classes: int, small: bool) -> list[str]:
    """Any other torchvision classifier: the last 1000-way layer (Linear, or SqueezeNet's 1x1 conv) gets
    `classes` outputs and the first conv takes in_ch channels."""
    if small:
        raise ConfigError("model.small_input=true is only known for the resnet, vgg, mobilenet and efficientnet "
                          "families; use model.small_input=false with larger images (e.g. data.image_size=[224, 224]).")
    head = [n for n, m in net.named_modules() if isinstance(m, nn.Linear) and m.out_features == 1000
            or isinstance(m, nn.Conv2d) and m.out_channels == 1000][-1]
    old = net.get_submodule(head)
    new = nn.Linear(old.in_features, classes, bias=old.bias is not None) if isinstance(old, nn.Linear) else \
        nn.Conv2d(old.in_channels, classes, old.kernel_size, old.stride, old.padding)
    set_module(net, head, new)
    stem = next(n for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    if net.get_submodule(stem).in_channels != in_ch:
        set_module(net, stem, carry_weights(net.get_submodule(stem), new_like(net.get_submodule(stem), in_ch)))
    return [head]


def new_like(old: nn.Conv2d, in_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation, old.groups,
                     old.bias is not None)


def set_module(net: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, new)


# Random init: no auxiliary heads (one output in training) and no slow scipy init (dltool initializes).
# With weights torchvision itself drops the auxiliary heads and refuses these arguments.
EXTRA_ARGS = {n: {"aux_logits": False, "init_weights": False} for n in ("googlenet", "inception_v3")}


# Every classification model in torchvision's own registry (not detection, segmentation, video, ...), with the
# catalog's adapter for its family (resnet, vgg, mobilenet/efficientnet, or the generic last-layer swap).
BACKBONES: dict[str, Entry] = {name: BACKBONE_FAMILIES[backbone_family(name)]
                               for name in models.list_models(module=models)}


def weights_url(w: models.WeightsEnum) -> str:
    """Where torchvision publishes a weight set (its file name carries the first hex digits of its sha256)."""
    return w.url


def load_checked(file: Path) -> dict:
    """A state dict from a hub cache file: its sha256 must start with the digits in its name, and it is
    unpickled with weights_only=True, so a file planted in the cache can neither pass for the weights nor run code."""
    m = re.search(r"-([a-f0-9]{6,})\.", file.name)
    if m is None:
        raise ConfigError(f"model.weights: {file} carries no hash in its name; dltool loads only the published files.")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if not digest.startswith(m.group(1)):
        raise ConfigError(f"model.weights: {file} is not the published file (its sha256 starts {digest[:8]}, its name "
                          f"says {m.group(1)}); delete it and download it again.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as ex:  # noqa: BLE001 - torch raises many types for a foreign or damaged file
        raise ConfigError(f"model.weights: {file} holds more than tensors and is refused "
                          f"({type(ex).__name__}).") from None
    if not isinstance(state, dict):
        raise ConfigError(f"model.weights: {file} is not a state dict of tensors.")
    return state


def builder_args(name: str, input_shape: Shape) -> dict:
    """Builder arguments for an input size other than the 224 px a transformer is built for by default."""
    h, w = input_shape[1:]
    if (h, w) == (224, 224) or not name.startswith(("vit_", "maxvit_")):
        return {}
    if name.startswith("maxvit_"):
        return {"input_size": (h, w)}
    if h != w:
        raise ConfigError(f"model.backbone={name} needs square images, but the data gives {h}x{w}; set "
                          f"data.image_size=[{max(h, w)}, {max(h, w)}].")
    return {"image_size": h}


def construct(name: str, weights: str | None, input_shape: Shape, device: str) -> nn.Module:
    """torchvision's builder on `device` (`meta`: no memory, no init compute; builders that compute with tensors
    while building, e.g. regnet's widths, are built on the CPU and moved)."""
    kwargs = {**EXTRA_ARGS.get(name, {}), **builder_args(name, input_shape)}
    builder = models.get_model_builder(name)
    try:
        try:
            with torch.device(device):
                return builder(weights=None, **kwargs)
        except NotImplementedError:
            return builder(weights=None, **kwargs).to(device)
    except (AssertionError, ValueError) as ex:
        raise ConfigError(f"model.backbone={name} cannot be built for {fmt(input_shape)} inputs "
                          f"({str(ex).splitlines()[0][:120]}).") from None


def load_torchvision(name: str, weights: str | None, input_shape: Shape = (3, 224, 224),
                     device: str = "cpu") -> nn.Module:
    """torchvision's registered builder, with checked weights from the hub cache (downloaded there when missing);
    on `meta` (dltool summary) the weights' values are not needed and not loaded."""
    net = construct(name, weights, input_shape, device)
    if weights is None or device == "meta":
        return net
    enum = models.get_model_weights(name)
    valid = ["DEFAULT"] + [w.name for w in enum]
    if weights not in valid:
        raise unknown(f"model.weights (for {name})", weights, valid)
    w = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    url = weights_url(w)
    file = Path(get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    try:
        if not file.is_file():
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(file), progress=False)
    except (OSError, RuntimeError) as ex:  # URLError is an OSError
        raise ConfigError(f"model.weights={weights}: could not download the {name} weights ({type(ex).__name__}); "
                          f"download {url} to {file} (TORCH_HOME sets the folder) or use model.weights=null for "
                          f"random initialization.") from None
    try:
        net.load_state_dict(load_checked(file))
    except RuntimeError as ex:
        raise ConfigError(f"model.weights={weights}: {file} does not fit torchvision's {name} "
                          f"({str(ex).splitlines()[0][:80]}).") from None
    return net


def build_backbone(spec: ModelConfig, input_shape: Shape, num_classes: int, device: str = "cpu") -> BuiltModel:
    """The named torchvision model, adapted to (C, H, W) inputs and num_classes outputs, with its shape trace."""
    adapt = BACKBONES.get(spec.backbone or "")
    if adapt is None:
        raise unknown("model.backbone", spec.backbone, BACKBONES)
    if spec.layers:
        raise ConfigError(f"model.backbone={spec.backbone} brings its own layers, so model.layers must be empty "
                          f"(it has {len(spec.layers)} entries); use one or the other.")
    if len(input_shape) != 3:
        raise ConfigError(f"model.backbone={spec.backbone} needs CxHxW images but the data gives {fmt(input_shape)} "
                          f"per example.")
    net = load_torchvision(spec.backbone, spec.weights, input_shape, device)
    with torch.device(device):
        fresh = adapt(net, input_shape[0], num_classes, spec.small_input)
    model = Backbone(net)
    pretrained = {}
    if spec.weights is not None:
        pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()
                      if not any(k.startswith(f"layers.{f}.") for f in fresh)}
    return BuiltModel(model, input_shape, trace(model, input_shape, spec), {}, pretrained)


def trace(model: Backbone, input_shape: Shape, spec: ModelConfig) -> list[LayerRecord]:
    """Summary rows: each top-level child; Sequential children (layer1, features, ...) one level deeper. Mult-adds
    and activations come from one forward pass under torch's counter (dltool.models.macs) on the model's device
    (`meta` for `dltool summary`: no compute); ops outside every row (ViT's class token, ...) get a row of their own."""
    rows: OrderedDict[str, tuple[nn.Module, int]] = OrderedDict()
    for name, child in model.layers.named_children():
        rows[name] = (child, 0)
        if isinstance(child, (nn.Sequential, nn.ModuleList)):  # a ModuleList is never called: its children are
            rows.update((f"{name}.{n}", (c, 1)) for n, c in child.named_children())
    shapes: dict[str, tuple[Shape, Shape]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, (tuple(i[0].shape[1:]),
                                                                                 tuple(first_tensor(o).shape[1:]))))
             for n, (m, _) in rows.items()]
    leaves = {n: m for n, (m, _) in rows.items() if not any(k.startswith(n + ".") for k in rows)}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    try:
        _, got = measure(model, torch.zeros(2, *input_shape, device=device), leaves)
    except (RuntimeError, ValueError, AssertionError) as ex:
        raise ConfigError(f"model.backbone={spec.backbone} cannot run on {fmt(input_shape)} inputs "
                          f"({str(ex).splitlines()[0][:120]}); use larger images"
                          f"{'' if spec.small_input else ' or model.small_input=true'}.") from None
    finally:
        for h in hooks:
            h.remove()
        model.train()
    out = [_record(n, m, d, shapes, got, rows) for n, (m, d) in rows.items()
           if n in shapes or any(k.startswith(n + ".") for k in rows)]
    rest_macs = got.macs - sum(got.group_macs.values())
    rest_acts = got.activations - sum(got.group_activations.values())
    if rest_macs > 0 or rest_acts > 0:
        out.append(LayerRecord("(outside the layers)", "functional ops", (), (), 0, 0, rest_macs // 2, 0,
                               rest_acts // 2))
    return out


def _record(name: str, m: nn.Module, depth: int, shapes: dict, got: Measured, rows: dict) -> LayerRecord:
    expanded = any(k.startswith(name + ".") for k in rows)  # its children carry the numbers
    params = 0 if expanded else sum(p.numel() for p in m.parameters())
    macs, acts = (0, 0) if expanded else (got.group_macs.get(name, 0) // 2, got.group_activations.get(name, 0) // 2)
    return LayerRecord(name, type(m).__name__, *shapes.get(name, ((), ())), params, params, macs, depth, acts)
