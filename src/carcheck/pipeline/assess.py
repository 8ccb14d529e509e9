"""Assess one case: gate, segment, fuse, reconcile (Ma et al., IEEE T-ITS 2023, Fig. 1).

One backbone pass per photo feeds the vehicle gate (ImageNet logits) and both segmentation
heads (parts, damage). Models are loaded once per :class:`Assessor`. A photo that cannot be
read is recorded with its reason; it never stops the case.
"""

from __future__ import annotations

import datetime as _dt
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .. import __version__
from ..data.images import ImageLoadError, load_image
from ..data.taxonomy import get_taxonomy
from ..models.backbone import inference_context
from ..models.inference import DEFAULT_SEGMENTERS, load_segmenters, to_input_tensor
from ..report.privacy import PRIVACY_NOTE
from ..report.schema import (AssessConfigModel, CaseReport, CaseSummary, Finding, PhotoDetection, PhotoReport)
from .agreement import PhotoFindings, reconcile, view_relations
from .fusion import FusionConfig, damaged_parts, size_class, visible_parts
from .gate import DEFAULT_PART_COVERAGE_THRESHOLD, DEFAULT_VEHICLE_THRESHOLD, part_coverage, passes_gate, vehicle_score

__all__ = ["AssessConfig", "Assessor", "PhotoVisual", "assess", "collect_photos"]

#: Files in a folder that are ignored silently (not photos, not errors).
_IGNORED = {".ds_store", "thumbs.db", "desktop.ini"}


@dataclass
class AssessConfig:
    """Every threshold of the assessment (stated in each report).

    Attributes:
        vehicle_threshold: ImageNet vehicle-score threshold of the presence gate.
        part_coverage_threshold: OR-ed gate rule: fraction of the photo labelled as car parts.
            A photo failing both rules is skipped.
        fusion: damaged-part thresholds (:class:`~carcheck.pipeline.fusion.FusionConfig`).
        review_threshold: findings with C_refined below this go to human review.
        longest_side: network input size of the longer side, px (the paper's 512).
        min_side: photos with a shorter side below this many px fail as too small.
        bf16: bf16 autocast on the CPU (default path).
    """

    vehicle_threshold: float = DEFAULT_VEHICLE_THRESHOLD
    part_coverage_threshold: float = DEFAULT_PART_COVERAGE_THRESHOLD
    fusion: FusionConfig = field(default_factory=FusionConfig)
    review_threshold: float = 0.5
    longest_side: int = 512
    min_side: int = 32
    bf16: bool = True
    threads: int | None = None


@dataclass
class PhotoVisual:
    """What the HTML report draws for an assessed photo (network resolution)."""

    image: np.ndarray  # (h, w, 3) uint8 RGB, resized to longest_side
    part_label: np.ndarray  # (h, w) uint8
    damage_label: np.ndarray  # (h, w) uint8


def collect_photos(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into the case's file list.

    Every regular file inside a folder is included, whatever its suffix, so a non-image file is
    reported rather than silently dropped; OS clutter (``.DS_Store``, hidden files) is ignored.
    A missing path is kept: it fails in the report with "file not found".
    """
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                          and f.name.lower() not in _IGNORED)
        else:
            out.append(p)
    return out


class Assessor:
    """Loads the models once and assesses cases.

    Args:
        config: thresholds; defaults as in :class:`AssessConfig`.
        weights: segmenter safetensors file(s) providing ``parts`` and ``damage`` heads (several
            files share one backbone pass; the first file with a head serves that task).

    Raises:
        FileNotFoundError / ValueError: from :func:`~carcheck.models.inference.load_segmenter`.
        KeyError: if the weights lack a ``parts`` or ``damage`` head.
    """

    def __init__(self, config: AssessConfig | None = None,
                 weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS) -> None:
        self.config = config or AssessConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.weights = [Path(weights)] if isinstance(weights, (str, Path)) else [Path(w) for w in weights]
        self.model = load_segmenters(self.weights)
        for head in ("parts", "damage"):
            if head not in self.model.taxonomies:
                raise KeyError(f"{weights}: no {head!r} head (heads: {list(self.model.taxonomies)})")
        self.part_names = list(get_taxonomy(self.model.taxonomies["parts"]).classes)
        self.damage_names = list(get_taxonomy(self.model.taxonomies["damage"]).classes)

    # ------------------------------------------------------------------ per photo
    def predict(self, image: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, torch.Tensor]:
        """One backbone pass: ``(vehicle score, part probs (P+1, h, w), damage probs (D+1, h, w), input)``
        at network resolution (longer side ``config.longest_side``)."""
        x = to_input_tensor(image, self.config.longest_side)
        with inference_context(self.config.bf16):
            out = self.model.backbone(x, with_logits=True)
            score = float(vehicle_score(out.logits)[0])
            logits = self.model.decode(out.features, tuple(x.shape[-2:]), ["parts", "damage"])
        parts = logits["parts"][0].float().softmax(0).numpy()
        damage = logits["damage"][0].float().softmax(0).numpy()
        return score, parts, damage, x

    def assess_photo(self, path: Path) -> tuple[PhotoReport, PhotoFindings | None, PhotoVisual | None]:
        """Assess one file; never raises for bad input (the report says why)."""
        t0 = time.perf_counter()
        name = str(path)
        try:
            image = load_image(path, min_side=self.config.min_side)
        except ImageLoadError as e:
            return PhotoReport(path=name, status="failed", reason=e.reason), None, None
        h, w = image.shape[:2]
        score, parts, damage, x = self.predict(image)
        part_label = parts.argmax(0).astype(np.uint8)
        coverage = part_coverage(part_label)
        if not passes_gate(score, coverage, self.config.vehicle_threshold, self.config.part_coverage_threshold):
            return (PhotoReport(path=name, status="skipped", width=w, height=h, vehicle_score=round(score, 4),
                                reason=(f"no vehicle: presence score {score:.3f} < {self.config.vehicle_threshold:.3f} "
                                        f"and part coverage {coverage:.2f} < {self.config.part_coverage_threshold:.2f}"),
                                seconds=round(time.perf_counter() - t0, 3)), None, None)
        fc = self.config.fusion
        vis = visible_parts(part_label, self.part_names, fc)
        closeup = len(vis) <= fc.closeup_max_parts
        regions = damaged_parts(parts, damage, self.part_names, self.damage_names, fc)
        nh, nw = part_label.shape
        scale = (h / nh) * (w / nw)
        sx, sy = w / nw, h / nh
        dets = []
        per_key: dict[tuple[str, str], list] = {}  # (part, damage) -> [max C_base, summed fraction of the part]
        for r in regions:
            frac_part = r.area / max(1, r.part_area)
            dets.append(PhotoDetection(
                part=r.part, damage=r.damage, area_px=round(r.area * scale, 1),
                area_fraction_of_part=round(frac_part, 4), area_fraction_of_image=round(r.area / (nh * nw), 5),
                size_class=size_class(frac_part, fc, closeup), c_base=round(r.c_base, 4),
                bbox_xywh=[round(r.bbox[0] * sx, 1), round(r.bbox[1] * sy, 1), round(r.bbox[2] * sx, 1),
                           round(r.bbox[3] * sy, 1)]))
            agg = per_key.setdefault((r.part, r.damage), [0.0, 0.0])
            agg[0] = max(agg[0], r.c_base)
            agg[1] += frac_part
        # several regions of one (part, damage) pair in a photo: the part's damaged share is their sum
        findings = {k: (c, f, size_class(f, fc, closeup)) for k, (c, f) in per_key.items()}
        report = PhotoReport(path=name, status="assessed", width=w, height=h, vehicle_score=round(score, 4),
                             visible_parts=vis, view_type="close-up" if closeup else "full view", detections=dets,
                             seconds=round(time.perf_counter() - t0, 3))
        img_small = (x[0].permute(1, 2, 0).float().clamp(0, 1).mul(255).round().to(torch.uint8).numpy())
        visual = PhotoVisual(img_small, part_label, damage.argmax(0).astype(np.uint8))
        return report, PhotoFindings(name, set(vis), findings), visual

    # ------------------------------------------------------------------ per case
    def assess(self, paths: Sequence[str | Path], case_id: str | None = None,
               track: Callable[..., Iterable] = lambda it, **k: it) -> tuple[CaseReport, dict[str, PhotoVisual]]:
        """Assess the photos of one case.

        Args:
            paths: files and/or folders (see :func:`collect_photos`).
            case_id: defaults to a random id.
            track: progress wrapper, e.g. ``rich.progress.track``.
        Returns:
            (the :class:`~carcheck.report.schema.CaseReport`, path -> :class:`PhotoVisual` of assessed photos)
        """
        files = collect_photos(paths)
        photos, pf, visuals = [], [], {}
        for f in track(files, description="assessing photos"):
            rep, fnd, vis = self.assess_photo(f)
            photos.append(rep)
            if fnd is not None:
                pf.append(fnd)
                visuals[rep.path] = vis
        rel = view_relations(pf)
        for rep in photos:
            if rep.path in rel:
                rep.same_perspective_as = rel[rep.path]["same_perspective_as"]
                rep.closeup_of = rel[rep.path]["closeup_of"]
        case = reconcile(pf, self.config.review_threshold)
        findings = [Finding(part=c.part, damage=c.damage, size_class=c.size_class,
                            area_fraction_of_part=round(c.area_fraction, 4), c_base=round(c.c_base, 4),
                            k_agree=round(c.k_agree, 4), c_refined=round(c.c_refined, 4), needs_review=c.needs_review,
                            review_reasons=c.review_reasons, photos=c.photos) for c in case]
        n = {s: sum(p.status == s for p in photos) for s in ("assessed", "skipped", "failed")}
        damaged = sorted({f.part for f in findings if f.part != "unassigned"})
        review = sum(f.needs_review for f in findings)
        if not files:
            verdict = "No photos were given."
        elif n["assessed"] == 0:
            verdict = "No photo could be assessed: see the per-photo reasons."
        elif not findings:
            verdict = f"No damage found on {n['assessed']} assessed photo(s)."
        else:
            verdict = (f"{len(findings)} finding(s) on {len(damaged)} part(s); {review} need human review.")
        if n["failed"]:
            verdict += f" {n['failed']} file(s) could not be read."
        fc = self.config.fusion
        report = CaseReport(
            case_id=case_id or uuid.uuid4().hex[:12],
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            carcheck_version=__version__,
            models={"segmenter": ", ".join(w.name for w in self.weights), "backbone": self.model.backbone.variant,
                    "vehicle_gate": "ImageNet vehicle classes (summed softmax) OR part coverage"},
            config=AssessConfigModel(vehicle_threshold=self.config.vehicle_threshold,
                                     part_coverage_threshold=self.config.part_coverage_threshold,
                                     min_region_fraction=fc.min_region_fraction,
                                     visible_part_fraction=fc.visible_part_fraction,
                                     closeup_max_parts=fc.closeup_max_parts, size_thresholds=list(fc.size_thresholds),
                                     review_threshold=self.config.review_threshold,
                                     longest_side_px=self.config.longest_side),
            summary=CaseSummary(photos=len(files), assessed=n["assessed"], skipped=n["skipped"], failed=n["failed"],
                                findings=len(findings), findings_for_review=review, damaged_parts=damaged,
                                verdict=verdict),
            findings=findings, photos=photos, privacy=PRIVACY_NOTE)
        return report, visuals


def assess(paths: Sequence[str | Path], case_id: str | None = None, config: AssessConfig | None = None,
           weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS, out_dir: str | Path | None = None) -> CaseReport:
    """Assess the photos of one case; optionally write ``report.json`` and ``report.html`` to ``out_dir``.

    Same result as ``carcheck assess PATHS --out DIR``. Bad files are recorded in the report
    (``status="failed"`` with a reason), never raised.
    """
    assessor = Assessor(config, weights)
    report, visuals = assessor.assess(paths, case_id)
    if out_dir is not None:
        from ..report.html import write_report

        write_report(report, visuals, out_dir, assessor.part_names, assessor.damage_names)
    return report
