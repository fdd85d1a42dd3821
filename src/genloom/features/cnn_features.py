"""Features of images from a local CNN: a TorchScript (``.pt``) or ONNX (``.onnx``) file."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, PrivateAttr

from genloom.core.errors import ConfigError, MissingDependencyError, StepError
from genloom.core.registry import FEATURES
from genloom.core.steps import StepContext
from genloom.features._image import ImageFeature, check_size, decode_image, resize
from genloom.features._media import PartKind, add_parts, run_per_row

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@FEATURES.register("cnn_features")
class CnnFeaturesFeature(ImageFeature):
    """Feature vectors of each image from a CNN in a local file: nothing is ever downloaded.

    ``model`` is a TorchScript file (``torch.jit.save``; run by torch) or an ONNX file (run by
    onnxruntime, which the ``image`` extra does not install: ``pip install onnxruntime``); the
    format is taken from the extension unless ``format`` says. Each image is decoded (RGB, or
    grey with ``channels: 1``), resized to ``size``, scaled to [0, 1], normalised by ``mean`` and
    ``std`` per channel, and batched as (B, C, H, W) float32.

    ``layer`` picks what is kept: ``output`` (the model's output), ``penultimate`` (TorchScript
    only: the top-level children of an ``nn.Sequential`` run in order without the last, e.g. the
    pooled features before a classifier head), or a name: an exported TorchScript method
    (``@torch.jit.export def embed(self, x)``) or an ONNX graph output. A 4-D result
    (B, C, H, W) is averaged over H and W; anything else is flattened per image. The vector is
    ``<output>`` (``fixed_size_list<float32>[d]``). The model file's content is part of the cache
    key (``files_read``).
    """

    type: Literal["cnn_features"] = "cnn_features"
    model: str = Field(description="path of the TorchScript (.pt, .pth) or ONNX (.onnx) file")
    format: Literal["auto", "torchscript", "onnx"] = Field(
        default="auto", description="the model's format; auto: .onnx is ONNX, anything else TorchScript"
    )
    layer: str = Field(
        default="output",
        description="output, penultimate (TorchScript nn.Sequential), or an exported method / ONNX output name",
    )
    size: tuple[int, int] = Field(default=(224, 224), description="every image is resized to [height, width]")
    channels: Literal[1, 3] = Field(default=3, description="3: RGB input; 1: grey input")
    mean: list[float] = Field(
        default=IMAGENET_MEAN, description="per-channel mean subtracted (after scaling to [0, 1])"
    )
    std: list[float] = Field(default=IMAGENET_STD, description="per-channel standard deviation divided by")
    batch_size: int = Field(default=32, ge=1, le=4096, description="images per forward pass")
    threads: int = Field(default=1, ge=1, le=256, description="intra-op threads of one process")

    extra: ClassVar[str] = "image"
    _runner: Any = PrivateAttr(default=None)

    def model_format(self) -> str:
        """torchscript or onnx."""
        if self.format != "auto":
            return self.format
        return "onnx" if self.model.lower().endswith(".onnx") else "torchscript"

    def check(self, path: str) -> None:
        check_size(self.size, path)
        if not os.path.isfile(self.resolve_path(self.model)):
            raise ConfigError(
                f"no model file at {self.model!r}",
                path=f"{path}.model",
                hint="a local .pt (TorchScript) or .onnx file",
            )
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise ConfigError(f"{name} needs 1 or {self.channels} values", path=f"{path}.{name}")
        if any(s <= 0 for s in self.std):
            raise ConfigError("std values must be positive", path=f"{path}.std")
        if self.layer == "penultimate" and self.model_format() == "onnx":
            raise ConfigError(
                "penultimate is for TorchScript models",
                path=f"{path}.layer",
                hint="name the ONNX graph output",
            )

    def files_read(self) -> list[str]:
        return [self.model]

    def check_requirements(self) -> None:
        module = "onnxruntime" if self.model_format() == "onnx" else "torch"
        try:
            __import__(module)
            __import__("PIL")
            __import__("skimage")
        except ImportError as e:
            hint = (
                "pip install onnxruntime" if module == "onnxruntime" else "pip install 'genloom[image]' torch"
            )
            raise MissingDependencyError(f"{e.name} (needed by 'cnn_features')", hint) from e

    def setup(self) -> None:
        path = self.resolve_path(self.model)
        if self.model_format() == "onnx":
            self._runner = _OnnxRunner(path, self.layer, self.threads)
        else:
            self._runner = _TorchScriptRunner(path, self.layer, self.threads)

    def parts(self) -> dict[str, PartKind]:
        raise NotImplementedError  # the dimension is known after the first forward pass

    def pixels(self, data: bytes) -> dict[str, Any]:
        """One image as a normalised (C, H, W) float32 array."""
        image = resize(decode_image(data, "RGB" if self.channels == 3 else "L"), self.size)
        if image.ndim == 2:
            image = image[:, :, None]
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        return {"x": ((image - mean) / std).transpose(2, 0, 1).astype(np.float32)}

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        kept, rows = run_per_row(self, table, ctx, self.column, self.pixels)
        present = [i for i, r in enumerate(rows) if r is not None]
        vectors: list[Any] = [None] * len(rows)
        dim = 0
        for start in range(0, len(present), self.batch_size):
            idx = present[start : start + self.batch_size]
            batch = np.stack([rows[i]["x"] for i in idx])  # type: ignore[index]  # (B, C, H, W)
            out = self._runner(batch)
            if out.ndim == 4:
                out = out.mean(axis=(2, 3))  # (B, C): global average pooling
            out = out.reshape(len(idx), -1)
            dim = out.shape[1]
            for i, v in zip(idx, out, strict=True):
                vectors[i] = v
        if not present:
            dim = self._runner.dimension(self.channels, self.size)
        return add_parts(kept, self.out, {"": ("vector", dim)}, [{"": v} for v in vectors])


class _TorchScriptRunner:
    """Runs a TorchScript module on (B, C, H, W) arrays: forward, penultimate or a method."""

    def __init__(self, path: str, layer: str, threads: int) -> None:
        import torch

        self.torch = torch
        self.threads = threads
        try:
            self.module = torch.jit.load(path, map_location="cpu").eval()
        except (RuntimeError, ValueError) as e:
            raise StepError(f"{path} is not a TorchScript file torch.jit.load reads: {e}"[:1000]) from e
        self.layer = layer
        if layer == "penultimate":
            children = list(self.module.children())
            if getattr(self.module, "original_name", "") != "Sequential" or len(children) < 2:
                raise StepError(
                    f"layer: penultimate needs an nn.Sequential of at least 2 modules; {path} is a "
                    f"{getattr(self.module, 'original_name', type(self.module).__name__)}: export a method "
                    "(@torch.jit.export def embed(self, x)) and set layer: embed"
                )
            self.chain = children[:-1]
        elif layer != "output" and not hasattr(self.module, layer):
            raise StepError(f"{path} has no method {layer!r} (export one with @torch.jit.export)")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                x = torch.from_numpy(batch)
                if self.layer == "output":
                    y = self.module(x)
                elif self.layer == "penultimate":
                    y = x
                    for child in self.chain:
                        y = child(y)
                else:
                    y = getattr(self.module, self.layer)(x)
                if isinstance(y, (tuple, list)):
                    y = y[0]
                return y.float().numpy()
        finally:
            torch.set_num_threads(before)

    def dimension(self, channels: int, size: tuple[int, int]) -> int:
        """The vector's length, from one blank image (for a batch with no image)."""
        out = self(np.zeros((1, channels, *size), dtype=np.float32))
        return int(out.mean(axis=(2, 3)).shape[1] if out.ndim == 4 else out.reshape(1, -1).shape[1])


class _OnnxRunner:
    """Runs an ONNX graph with onnxruntime (CPU) on (B, C, H, W) arrays."""

    def __init__(self, path: str, layer: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise StepError(f"{path} is not an ONNX model onnxruntime reads: {e}"[:1000]) from e
        outputs = [o.name for o in self.session.get_outputs()]
        if layer != "output" and layer not in outputs:
            raise StepError(f"{path} has no output {layer!r}; its outputs: {', '.join(outputs)}")
        self.output = outputs[0] if layer == "output" else layer
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (y,) = self.session.run([self.output], {self.input: batch})
        return np.asarray(y, dtype=np.float32)

    def dimension(self, channels: int, size: tuple[int, int]) -> int:
        """The vector's length, from one blank image (for a batch with no image)."""
        out = self(np.zeros((1, channels, *size), dtype=np.float32))
        return int(out.mean(axis=(2, 3)).shape[1] if out.ndim == 4 else out.reshape(1, -1).shape[1])
