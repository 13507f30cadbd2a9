"""Training-time augmentation from `augment.ops`, an ordered list of `name` or `name: {options}`.

Two back ends per op in one table (dltool.catalog.AUGMENTATIONS: builder = batched, v2 = folder data):
- in-memory tensors: batched tensor ops on the training device, `(x, generator) -> x` for a whole
  (N, C, H, W) batch, no per-sample Python; each example draws its own parameters and its own coin
  (probability `p`). Random numbers come from a device generator seeded from the trainer's generator,
  so the same seed gives the same augmented batch.
- folder data (streamed through a DataLoader): torchvision.transforms.v2, run per image in the workers.
Ops work on images in [0, 1]: in-memory batches are stored normalized, so the callable undoes the
normalization, augments and normalizes again. Validation and test data are never augmented.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from dltool import plugins
from dltool.catalog import AUGMENTATIONS, Augmentation
from dltool.data.normalize import apply_norm
from dltool.errors import ConfigError
from dltool.registry import check_keys, lookup, resolve

Batch = torch.Tensor  # (N, C, H, W)


# --------------------------------------------------------------------------- helpers
def coin(x: Batch, p: float, g: torch.Generator) -> torch.Tensor:
    """(N,) bool: which examples this op touches."""
    return torch.rand(x.shape[0], generator=g, device=x.device) < p


def uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def per_sample(mask: torch.Tensor, new: Batch, old: Batch) -> Batch:
    return torch.where(mask.view(-1, *[1] * (old.dim() - 1)), new, old)


def span(v: Any, name: str) -> tuple[float, float]:
    """A range option: [lo, hi], or one number v meaning [-v, v]."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ConfigError(f"option {name}={list(v)} must be one number or two (low, high).")
        return float(v[0]), float(v[1])
    return -float(v), float(v)


# --------------------------------------------------------------------------- batched ops
def translate(x: Batch, o: dict, g: torch.Generator) -> Batch:
    """Zero-pad by `pad` pixels and crop back at a random offset per example (the CIFAR recipe)."""
    n, _, h, w = x.shape
    pad = int(o["pad"])
    padded = F.pad(x, (pad, pad, pad, pad), mode="constant" if o["fill"] == "zeros" else o["fill"])
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=x.device)
    still = ~coin(x, o["p"], g)
    oy, ox = oy.masked_fill(still, pad), ox.masked_fill(still, pad)  # untouched examples: centre crop
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def hflip(x: Batch, o: dict, g: torch.Generator) -> Batch:
    return per_sample(coin(x, o["p"], g), x.flip(-1), x)


def vflip(x: Batch, o: dict, g: torch.Generator) -> Batch:
    return per_sample(coin(x, o["p"], g), x.flip(-2), x)


def affine(x: Batch, o: dict, g: torch.Generator) -> Batch:
    """Rotation, scaling, translation (fraction of the size) and shear in one resampling per batch."""
    n, dev = x.shape[0], x.device
    angle = uniform(n, *span(o["degrees"], "degrees"), g, dev) * math.pi / 180
    scale = uniform(n, *span(o["scale"], "scale"), g, dev) if isinstance(o["scale"], (list, tuple)) \
        else torch.full((n,), float(o["scale"]), device=dev)
    shear = uniform(n, *span(o["shear"], "shear"), g, dev) * math.pi / 180
    tx, ty = (uniform(n, *span(o["translate"], "translate"), g, dev) * 2 for _ in range(2))  # grid units: 2 = size
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    theta = torch.stack([torch.stack([cos, -sin + cos * tan, tx], 1),
                         torch.stack([sin, cos + sin * tan, ty], 1)], 1) / scale.view(n, 1, 1)  # (N, 2, 3)
    theta[:, :, 2] = torch.stack([tx, ty], 1)
    keep = ~coin(x, o["p"], g)
    theta[keep] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=dev)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def jitter(x: Batch, o: dict, g: torch.Generator) -> Batch:
    """Brightness (multiply) and contrast (blend with the image's mean gray), per example."""
    n, dev = x.shape[0], x.device
    b = uniform(n, 1 - o["brightness"], 1 + o["brightness"], g, dev).view(n, 1, 1, 1)
    c = uniform(n, 1 - o["contrast"], 1 + o["contrast"], g, dev).view(n, 1, 1, 1)
    out = (x * b).clamp(0, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)  # gray level of each image
    out = ((out - mean) * c + mean).clamp(0, 1)
    return per_sample(coin(x, o["p"], g), out, x)


def invert(x: Batch, o: dict, g: torch.Generator) -> Batch:
    return per_sample(coin(x, o["p"], g), 1.0 - x, x)


def blur(x: Batch, o: dict, g: torch.Generator) -> Batch:
    """Gaussian blur with a per-example sigma: one grouped (depthwise) conv per axis."""
    n, c, h, w = x.shape
    k = int(o["kernel"])
    if k < 1 or k % 2 == 0:
        raise ConfigError(f"kernel={k} must be an odd positive number of pixels (3, 5, ...).")
    sigma = uniform(n, *span(o["sigma"], "sigma"), g, x.device).abs().clamp_min(1e-3)  # (N,)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(r[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, k)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (k // 2, k // 2, 0, 0), mode="replicate"), kern.view(n * c, 1, 1, k), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, k // 2, k // 2), mode="replicate"), kern.view(n * c, 1, k, 1), groups=n * c)
    return per_sample(coin(x, o["p"], g), flat.view(n, c, h, w), x)


def noise(x: Batch, o: dict, g: torch.Generator) -> Batch:
    out = x + o["std"] * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    out = out.clamp(0, 1) if x.dim() == 4 else out
    return per_sample(coin(x, o["p"], g), out, x)


def erase(x: Batch, o: dict, g: torch.Generator) -> Batch:
    """Random erasing (occlusion): a rectangle of random area and aspect ratio set to `value`."""
    n, _, h, w = x.shape
    dev = x.device
    area = uniform(n, *o["scale"], g, dev) * h * w
    ratio = torch.exp(uniform(n, math.log(o["ratio"][0]), math.log(o["ratio"][1]), g, dev))
    eh = (area * ratio).sqrt().round().clamp(1, h)
    ew = (area / ratio).sqrt().round().clamp(1, w)
    top = (torch.rand(n, generator=g, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=g, device=dev) * (w - ew + 1)).floor()
    ys, xs = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
    box = (ys >= top.view(n, 1, 1)) & (ys < (top + eh).view(n, 1, 1)) & \
          (xs >= left.view(n, 1, 1)) & (xs < (left + ew).view(n, 1, 1))  # (N, H, W)
    box &= coin(x, o["p"], g).view(n, 1, 1)
    return torch.where(box[:, None], torch.as_tensor(float(o["value"]), device=dev, dtype=x.dtype), x)


# --------------------------------------------------------------------------- torchvision.transforms.v2 (folder data)
def v2_apply(t: Any, p: float) -> Any:
    return t if p >= 1 else v2.RandomApply([t], p=p)


class AddNoise(torch.nn.Module):
    """Gaussian noise for one (C, H, W) image in [0, 1] (transforms.v2 has no portable equivalent)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.std * torch.randn_like(x)).clamp(0, 1)


def _v2(name: str, **kw: Any) -> Any:
    return getattr(v2, name)(**kw)


def v2_affine(o: dict) -> Any:
    lo, hi = span(o["degrees"], "degrees")
    scale = tuple(o["scale"]) if isinstance(o["scale"], (list, tuple)) else (o["scale"], o["scale"])
    t = abs(span(o["translate"], "translate")[1])
    return v2_apply(_v2("RandomAffine", degrees=(lo, hi), translate=(t, t) if t else None, scale=scale,
                        shear=span(o["shear"], "shear") if o["shear"] else None), o["p"])


def v2_translate(o: dict) -> Any:
    return v2_apply(PadCrop(int(o["pad"]), o["fill"]), o["p"])


class PadCrop(torch.nn.Module):
    """Pad and RandomCrop back to the input's own size (v2.RandomCrop wants a fixed size up front)."""

    def __init__(self, pad: int, fill: str):
        super().__init__()
        self.pad, self.mode = pad, "constant" if fill == "zeros" else fill

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return v2.RandomCrop(tuple(x.shape[-2:]), padding=self.pad, padding_mode=self.mode)(x)


def v2_hflip(o: dict) -> Any:
    return _v2("RandomHorizontalFlip", p=o["p"])


def v2_vflip(o: dict) -> Any:
    return _v2("RandomVerticalFlip", p=o["p"])


def v2_jitter(o: dict) -> Any:
    return v2_apply(_v2("ColorJitter", brightness=o["brightness"], contrast=o["contrast"]), o["p"])


def v2_invert(o: dict) -> Any:
    return _v2("RandomInvert", p=o["p"])


def v2_blur(o: dict) -> Any:
    return v2_apply(_v2("GaussianBlur", kernel_size=int(o["kernel"]),
                        sigma=tuple(abs(s) for s in span(o["sigma"], "sigma"))), o["p"])


def v2_noise(o: dict) -> Any:
    return v2_apply(AddNoise(o["std"]), o["p"])


def v2_erase(o: dict) -> Any:
    return _v2("RandomErasing", p=o["p"], scale=tuple(o["scale"]), ratio=tuple(o["ratio"]), value=o["value"])


def v2_transform(name: str, opts: dict) -> Any:
    """The folder-data (torchvision.transforms.v2) form of the op `name`."""
    if name in plugins.table("augmentations"):
        raise ConfigError(f"augment.ops: the plug-in augmentation '{name}' works on in-memory batches only, not on "
                          f"folder data (data=imagefolder), which augments each image in the loader workers.")
    return resolve(AUGMENTATIONS[name].v2)(opts)


def with_probability(fn: Callable[[Batch, dict, torch.Generator], Batch]) -> Callable[..., Batch]:
    """A plug-in op applied to each example with probability p (dltool adds the `p` option, default 1)."""
    def op(x: Batch, opts: dict, g: torch.Generator) -> Batch:
        changed = fn(x, {k: v for k, v in opts.items() if k != "p"}, g)
        keep = torch.rand(x.shape[0], generator=g, device=g.device) >= float(opts["p"])  # (N,)
        return torch.where(keep.view(-1, *[1] * (x.dim() - 1)).to(x.device), x, changed)
    return op


def table() -> dict[str, Augmentation]:
    """dltool's ops and the plug-in ops (dltool/plugins.py; any layout, in-memory batches only)."""
    own = {name: Augmentation(e.builder, e.doc, defaults={**e.defaults, "p": e.defaults.get("p", 1.0)},
                              obj=with_probability(e.load()), image_only=False)
           for name, e in plugins.entries("augmentations").items()}
    return {**AUGMENTATIONS, **own}


# --------------------------------------------------------------------------- from the config
def parse(ops: list, layout: str = "image") -> list[tuple[str, dict]]:
    """`augment.ops` -> [(name, options with defaults)], refusing unknown ops/options and bad values."""
    out = []
    for i, item in enumerate(ops):
        if isinstance(item, str):
            name, given = item, {}
        elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), (dict, type(None))):
            name, given = next(iter(item.items()))
            given = dict(given or {})
        else:
            raise ConfigError(f"augment.ops[{i}]={item!r} must be an op name or `name: {{options}}` "
                              f"(e.g. `rotate: {{degrees: 10}}`); "
                              f"ops: {', '.join(table())}.")
        op = lookup(table(), name, f"augment.ops[{i}]")
        check_keys(given, op.defaults, f"augment.ops[{i}] ({name})")
        opts = {**op.defaults, **given}
        if not 0.0 <= float(opts["p"]) <= 1.0:
            raise ConfigError(f"augment.ops[{i}] ({name}): p={opts['p']} must be a probability between 0 and 1.")
        if op.image_only and layout != "image":
            raise ConfigError(f"augment.ops[{i}]={name!r} needs image data but this data set has layout {layout!r}; "
                              f"only noise works on it.")
        dry_run(name, opts, f"augment.ops[{i}] ({name})", layout)
        out.append((name, opts))
    return out


def dry_run(name: str, opts: dict, where: str, layout: str) -> None:
    """Try the op once on a tiny batch, so a bad option value fails before training starts."""
    x = torch.rand(2, 3, 12, 12) if layout == "image" else torch.rand(2, 4, 4)
    try:
        ops = table()
        ops[name](x, opts, torch.Generator().manual_seed(0))
        v2_transform(name, opts) if layout == "image" and name in AUGMENTATIONS else None
    except ConfigError as ex:
        raise ConfigError(f"{where}: {ex}") from None
    except (TypeError, ValueError, RuntimeError) as ex:
        shown = ", ".join(f"{k}={v}" for k, v in opts.items())
        raise ConfigError(f"{where}: the options {shown} do not work ({str(ex).splitlines()[0]}); "
                          f"see `dltool list augmentations`.") from None


def denormalizer(norm: dict) -> tuple[Callable[[Batch], Batch], Callable[[Batch], Batch]]:
    """(to [0, 1] pixel values, back to the normalized inputs the model sees) for stored statistics."""
    kind = norm.get("kind", "none")
    if kind == "none":
        return (lambda x: x), (lambda x: x)
    if kind in ("mean", "standardize"):
        def undo(x: Batch) -> Batch:
            shape = [1] * x.dim()
            shape[x.dim() - 1 if norm["layout"] == "sequence" else 1] = -1
            return x * norm["std"].to(x.device).view(shape) + norm["mean"].to(x.device).view(shape)
        return undo, (lambda x: apply_norm(x, norm))
    if kind == "zca":
        return zca_pair(norm)
    raise ConfigError("augmentation cannot be combined with data.normalize=pca (inputs are no longer images); "
                      "use zca, standardize, mean or none.")


def zca_pair(norm: dict) -> tuple[Callable[[Batch], Batch], Callable[[Batch], Batch]]:
    """ZCA: x = W^+ z + mean back to pixels, z = (x - mean) W forward; matrices cached per device."""
    inv = torch.linalg.pinv(norm["matrix"].double()).float()  # (D, D)
    on: dict = {}  # per device, so (3072, 3072) matrices are copied to the GPU once, not per batch

    def mats(x: Batch) -> tuple[torch.Tensor, ...]:
        if x.device not in on:
            on[x.device] = tuple(t.to(x.device) for t in (inv, norm["matrix"], norm["mean"]))
        return on[x.device]

    def unwhiten(x: Batch) -> Batch:
        m, _, mean = mats(x)
        return (x.flatten(1) @ m + mean).view(x.shape)

    def whiten(x: Batch) -> Batch:
        _, w, mean = mats(x)
        return ((x.flatten(1) - mean) @ w).view(x.shape)
    return unwhiten, whiten


def build_batched(ops: list, norm: dict, layout: str) -> Callable[[Batch, torch.Generator], Batch] | None:
    """The in-memory augmenter: (normalized batch, trainer generator) -> augmented normalized batch."""
    steps = parse(ops, layout)
    if not steps:
        return None
    to_pixels, to_inputs = denormalizer(norm)
    ops = table()  # looked up once, not per batch

    def augment(x: Batch, generator: torch.Generator) -> Batch:
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        g = torch.Generator(device=x.device).manual_seed(seed)
        out = to_pixels(x)
        for name, opts in steps:
            out = ops[name](out, opts, g)
        return to_inputs(out)

    return augment


def build_v2(ops: list, layout: str = "image") -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The folder-data augmenter: one (C, H, W) image in [0, 1] -> augmented, in the DataLoader workers."""
    steps = parse(ops, layout)
    return v2.Compose([v2_transform(name, opts) for name, opts in steps]) if steps else None


def check_size(ops: list, shape: tuple) -> None:
    """Refuse shifts and blurs that destroy small images: a translation by more than a quarter of the side moves
    the content out of the frame (augment=standard's pad 4 on 8x8 digits: half of it), a blur kernel wider than
    half the side averages the whole image."""
    side = min(shape[-2:])
    for i, (name, opts) in enumerate(parse(ops, "image")):
        pad, kernel = opts.get("pad", 0), opts.get("kernel", 0)
        if name == "translate" and isinstance(pad, (int, float)) and 4 * pad > side:
            raise ConfigError(f"augment.ops[{i}] (translate pad={pad}) shifts {shape[-2]}x{shape[-1]} images by up "
                              f"to {pad} pixels, {pad / side:.0%} of their side, out of the frame; use pad <= "
                              f"{max(1, side // 4)} (augment=digits shifts by 1 pixel).")
        if name == "blur" and isinstance(kernel, int) and 2 * kernel > side:
            raise ConfigError(f"augment.ops[{i}] (blur kernel={kernel}) on {shape[-2]}x{shape[-1]} images averages "
                              f"over more than half the image; use kernel <= {max(1, side // 2) // 2 * 2 - 1} or "
                              f"drop the blur.")


def attach(data: Any, ops: list) -> Callable[[Batch, torch.Generator], Batch] | None:
    """Wire augmentation into a DataBundle's training split; returns Setup.augment (or None)."""
    if data.layout == "image" and len(data.input_shape) == 3:
        check_size(ops, tuple(data.input_shape))
    if hasattr(data.train, "dataset"):  # streamed folder data: transforms run in the workers
        data.train.dataset.transform = build_v2(ops, data.layout)
        return None
    return build_batched(ops, data.norm, data.layout)
