"""A trained model as a file other programs run: ONNX, TorchScript or a torch.export program.

Every format gets a dynamic batch dimension (the example batch only fixes the other dimensions).
`WithNormalization` bakes the training normalization into the graph, so raw inputs go in.
A model that cannot be converted is probed layer by layer, and the first layer that fails is named.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Callable

import onnxruntime
import torch
from torch import nn

from dltool.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".ts.pt", "exported": ".pt2"}
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "exported": "a torch.export program"}


class WithNormalization(nn.Module):
    """The training normalization (stored statistics) in front of the model: raw inputs in, logits out; for a
    regression run also the targets' de-standardization behind it, so values come out in original units."""

    def __init__(self, model: nn.Module, norm: dict, raw_ndim: int, target_norm: dict | None = None) -> None:
        super().__init__()
        self.model, self.kind = model, norm.get("kind", "none")
        self.targets = target_norm is not None
        if self.targets:
            self.register_buffer("target_mean", target_norm["mean"].float().reshape(1, -1).clone())  # (1, K)
            self.register_buffer("target_std", target_norm["std"].float().reshape(1, -1).clone())
        if self.kind in ("mean", "standardize"):
            shape = [1] * raw_ndim  # raw_ndim counts the batch dimension
            shape[raw_ndim - 1 if norm["layout"] == "sequence" else 1] = -1
            self.register_buffer("mean", norm["mean"].float().reshape(shape).clone())
            self.register_buffer("std", norm["std"].float().reshape(shape).clone())
        elif self.kind in ("pca", "zca"):
            self.register_buffer("mean", norm["mean"].float().clone())  # (D,)
            self.register_buffer("matrix", norm["matrix"].float().clone())  # (D, K)
        elif self.kind != "none":
            raise ConfigError(f"--with-normalization: normalization {self.kind!r} cannot be put into the graph; "
                              f"export without it and normalize inputs yourself.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("mean", "standardize"):
            x = (x - self.mean) / self.std
        elif self.kind == "pca":
            x = (x.flatten(1) - self.mean) @ self.matrix  # (N, K)
        elif self.kind == "zca":
            x = ((x.flatten(1) - self.mean) @ self.matrix).reshape(x.shape)
        out = self.model(x)
        return out * self.target_std + self.target_mean if self.targets else out


ONNX_OPSETS = (18, 23)  # torch.onnx.export(dynamo=True) writes opset 18 and newer (older ones are not written)

def batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1, max=1 << 20)


def to_onnx(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    """The model as ONNX bytes (torch's torch.export-based exporter), input `input`, output `logits`."""
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch_dim()},),
                                input_names=["input"], output_names=["logits"], opset_version=opset,
                                verbose=False, optimize=True)
    buf = io.BytesIO()
    program.save(buf, external_data=False)  # one self-contained file
    return buf.getvalue()


def to_torchscript(model: nn.Module, example: torch.Tensor) -> bytes:
    traced = torch.jit.trace(model, example, check_trace=False)  # torch.jit is deprecated, still widely run
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()


def to_exported(model: nn.Module, example: torch.Tensor) -> bytes:
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch_dim()},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def convert(model: nn.Module, example: torch.Tensor, fmt: str, opset: int = 18) -> bytes:
    """The file's bytes for `fmt` (nothing is written here); ConfigError naming the first layer that fails."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not known; valid: {', '.join(FORMATS)}.")
    model = model.eval()
    try:
        return run_converter(model, example, fmt, opset)
    except ConfigError:
        raise
    except Exception as ex:  # noqa: BLE001 - torch raises many kinds; the user gets the layer, not a traceback
        log.info("export to %s failed", fmt, exc_info=True)
        raise ConfigError(culprit_sentence(model, example, fmt, opset, ex)) from None


TORCHSCRIPT_DEPRECATED = ("--format torchscript: torch deprecates TorchScript (torch.jit.trace, save and load warn "
                          "FutureWarning: switch to torch.compile or torch.export); --format exported writes a "
                          "torch.export program, the successor")


def run_converter(model: nn.Module, example: torch.Tensor, fmt: str, opset: int) -> bytes:
    """Exporters warn about what they trace (TracerWarning, deprecations); the check on real inputs decides. One
    deprecation is said in dltool's words, since it concerns the format itself: TorchScript's."""
    if fmt == "torchscript":
        log.warning(TORCHSCRIPT_DEPRECATED)
    with torch.no_grad(), quiet_export_logs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            return to_onnx(model, example, opset)
        if fmt == "torchscript":
            return to_torchscript(model, example)
        return to_exported(model, example)


class quiet_export_logs:
    """torch.onnx and torch.export log progress and warnings at INFO/WARNING; dltool prints its own result."""

    NAMES = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript")

    def __enter__(self) -> None:
        self.levels = {n: logging.getLogger(n).level for n in self.NAMES}
        for n in self.NAMES:
            logging.getLogger(n).setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for n, level in self.levels.items():
            logging.getLogger(n).setLevel(level)


def layer_inputs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, module, the input it saw) for every leaf module, in the order they ran on `example`."""
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = []
    for name, m in model.named_modules():
        if name and not list(m.children()):
            def hook(mod: nn.Module, inp: tuple, out: object, name: str = name) -> None:
                if inp and isinstance(inp[0], torch.Tensor):
                    seen.append((name, mod, inp[0].detach()))
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # noqa: BLE001 - the model fails in PyTorch itself: the layers seen so far are still probed
        pass
    finally:
        for h in handles:
            h.remove()
    return seen


def culprit_sentence(model: nn.Module, example: torch.Tensor, fmt: str, opset: int, ex: Exception) -> str:
    """One sentence: the first layer that cannot be converted on its own, or the model with torch's reason."""
    for name, module, x in layer_inputs(model, example):
        try:
            run_converter(module.eval(), x, fmt, opset)
        except Exception as inner:  # noqa: BLE001
            short = name.removeprefix("layers.").removeprefix("model.layers.")
            return (f"layer {short} ({type(module).__name__}) cannot be exported to {FORMAT_NAMES[fmt]}: "
                    f"{first_line(inner)}.")
    return f"the model cannot be exported to {FORMAT_NAMES[fmt]}: {first_line(ex)}."


def first_line(ex: Exception) -> str:
    text = next((ln.strip() for ln in str(ex).splitlines() if ln.strip()), type(ex).__name__)
    return (text[:200] + "...") if len(text) > 200 else text.rstrip(".")


def load_runner(fmt: str, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running the written file on a (N, ...) float32 CPU batch, as its users would."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    else:
        module = torch.export.load(str(path)).module()
    return lambda x: module(x).detach()
