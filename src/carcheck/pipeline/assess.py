"""Assess one case: the orchestration only (Ma et al., IEEE T-ITS 2023, Fig. 1).

read photos -> run the models -> fuse -> reconcile -> build the report. Each rule lives in its own
pure module, found by name:

- :mod:`.inputs`: the case's entries; blank, too small and duplicate photos.
- :mod:`.checks`: presence gate, damage-filter verdict table, severity gate, make/model OOD rule
  (:mod:`.gate`: the fallback presence rule without the presence head).
- :mod:`.fusion`: damaged parts D_k from the part and damage maps; :mod:`.plausibility`: an
  implausible (part, damage) pair moved to the plausible neighbouring part or flagged;
  :mod:`.size`: size classes and the rescaling to the photo's own pixels.
- :mod:`.agreement`: view relations, K_agree, C_refined.
- :mod:`.photo_type`: what each photo shows; only exterior photos are searched for exterior damage,
  interior photos keep the car-state heads, documents and VIN / dashboard photos are listed with their type.
- :mod:`.quality`: capture quality (blur, exposure, glare, vehicle too far or cut off, resolution).
- :mod:`.identity`: make/model voting and the same-vehicle check (:mod:`.consistency`).
- :mod:`.review`: the one place that decides what needs a person and why.
- :mod:`carcheck.report.build`: the summary, the verdict text and the report;
  :mod:`carcheck.report.html`: report.json and report.html.

One backbone pass per photo feeds the presence gate, both segmentation heads and every installed
image-level head on the shared features; models with their own fine-tuned backbone (the shipped
same-vehicle embedding and make/model classifier) add one small pass each, only on photos that
pass the presence gate. Models are loaded once per :class:`Assessor`. A photo that cannot be read
is recorded with its reason; it never stops the case. The config is one pydantic model
(:class:`~carcheck.schema.AssessConfig`) that each report states in full.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..data.images import DecodedImage, ImageLoadError, decode_buffer_bytes, decode_image, display_name
from ..data.taxonomy import get_plausibility, get_taxonomy
from ..models.backbone import inference_context
from ..models.inference import DEFAULT_SEGMENTERS, load_segmenters, to_input_tensor
from ..models.runtime import resolve_runtime, set_threads, trim_heap
from ..report.build import build_report
from ..schema import (AssessConfig, CaseReport, DamageFilter, Finding, FusionConfig, ModelFile, PartFinding,
                      PhotoDetection, PhotoReport)
from . import checks, review
from .confidence import DEFAULT_PATH as PART_CONFIDENCE, load_part_confidence, photo_evidence
from .agreement import CaseFinding, PartCaseFinding, PhotoFindings, reconcile, reconcile_parts, view_relations
from .fusion import damaged_parts, visible_parts
from .gate import part_coverage, vehicle_score
from .identity import make_model_vote, same_vehicle_check
from .image_heads import ImageHeads, PhotoHeadOutputs, head_result
from .inputs import DuplicateFinder, blank_reason, collect_photos, exact_name_bytes, expand_inputs, too_small_reason
from .part_ends import consistent_ends
from .photo_type import EXTERIOR_TYPES, decide_photo_type, probabilities_from_logits
from .quality import check_quality
from .plausibility import apply_plausibility
from .size import finding_sizes, region_size_cm, scale_area, scale_bbox, size_class, to_photo_pixels

__all__ = ["Assessor", "PhotoVisual", "Prediction", "assess", "collect_photos",
           "file_sha256"]

#: kept for callers of the old private name
_to_photo_pixels = to_photo_pixels


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes. Raises OSError when it cannot be read."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class Prediction:
    """One photo through the models (:meth:`Assessor.predict`).

    Attributes:
        x: network input ``(1, 3, h, w)`` float in [0, 1].
        vehicle_score: ImageNet vehicle-class score (fraction).
        presence: presence head P(vehicle), or None without that head.
        heads: every image-level head's output.
        parts / damage: softmax maps ``(P+1, h, w)`` / ``(D+1, h, w)`` float32, None when the
            presence gate stopped the photo before the decoders.
        skip_reason: why the presence gate skips the photo (:func:`~.checks.presence_skip_reason`,
            decided once, here), or None.
    """

    x: torch.Tensor
    vehicle_score: float
    presence: float | None
    heads: PhotoHeadOutputs
    parts: np.ndarray | None
    damage: np.ndarray | None
    skip_reason: str | None = None


@dataclass
class PhotoVisual:
    """What the HTML report draws for an assessed photo (network resolution)."""

    image: np.ndarray  # (h, w, 3) uint8 RGB, resized to longest_side
    part_label: np.ndarray  # (h, w) uint8
    damage_label: np.ndarray  # (h, w) uint8
    heads: PhotoHeadOutputs | None = None
    gradcam: np.ndarray | None = None  # (h, w) float32 Grad-CAM map in [0, 1], for flagged photos


#: Photos whose decode buffer is larger than this (bytes) are not decoded ahead, in parallel with
#: the networks, but after the previous photo is done (:meth:`Assessor._run_photos`): 32 MiB is an
#: 8 MP RGB buffer, the largest a JPEG of any size needs at the default ``max_decoded_pixels``.
PREFETCH_MAX_BYTES = 32 * 2 ** 20


class Assessor:
    """Loads the models once and assesses cases.

    Args:
        config: thresholds; defaults as in :class:`AssessConfig`.
        weights: segmenter safetensors file(s) providing ``parts`` and ``damage`` heads (several
            files share one backbone pass; the first file with a head serves that task).
        heads: image-level head files by task (default: the shipped ones that are installed;
            ``{}`` for none).
        extra_heads: more head files, e.g. a SOCAR dirt classifier (shown under car state).
        cost_table: the repair estimate's cost table (:mod:`.estimate`): a YAML file, a loaded
            ``CostTable``, or None for the shipped one. Every report gets an ``estimate``.
        reuse_index: a :class:`~.reuse.ReuseIndex` (SQLite file for the CLI, the service's database):
            each case's assessed photos are matched against it and each other, the EXIF rules applied,
            the matches written to ``report.reuse`` with review reasons, and the case indexed. None: no check.

    Raises:
        FileNotFoundError / ValueError: from :func:`~carcheck.models.inference.load_segmenter`.
        KeyError: if the weights lack a ``parts`` or ``damage`` head.
    """

    def __init__(self, config: AssessConfig | None = None,
                 weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS,
                 heads: dict[str, str | Path] | None = None, extra_heads: Sequence[str | Path] = (),
                 cost_table=None, reuse_index=None) -> None:
        from .estimate import CostTable, load_cost_table

        self.config = config or AssessConfig()
        #: (table, label) of the repair estimate; CostTableError (a ValueError) for a bad file, before any model loads
        self.cost_table = ((cost_table, f"{cost_table.name} v{cost_table.version}") if isinstance(cost_table, CostTable)
                           else load_cost_table(cost_table))
        self.reuse_index = reuse_index
        # ValueError for an unknown precision or engine, or onnx with bf16
        self.precision, self.engine = resolve_runtime(self.config.precision, self.config.engine)
        self.bf16 = self.precision == "bf16"
        if self.config.threads:
            set_threads(self.config.threads)
        self.weights = [Path(weights)] if isinstance(weights, (str, Path)) else [Path(w) for w in weights]
        self.model = load_segmenters(self.weights)
        for head in ("parts", "damage"):
            if head not in self.model.taxonomies:
                raise KeyError(f"{weights}: no {head!r} head (heads: {list(self.model.taxonomies)})")
        self.part_names = list(get_taxonomy(self.model.taxonomies["parts"]).classes)
        self.damage_names = list(get_taxonomy(self.model.taxonomies["damage"]).classes)
        #: damage x part plausibility of the segmenter's taxonomies (None: none declared, no rule)
        self.plausibility = get_plausibility(self.model.taxonomies["damage"], self.model.taxonomies["parts"])
        self.head_paths = None if heads is None else {k: Path(v) for k, v in heads.items()}
        self.heads = ImageHeads(self.model.backbone, self.head_paths,
                                extra_heads)
        #: every model file with its SHA-256 (stated in each report)
        self.model_files = [ModelFile(role="segmenter", file=w.name, sha256=file_sha256(w), bytes=w.stat().st_size)
                            for w in self.weights]
        self.model_files += [ModelFile(role=f"head:{t}", file=f.name, sha256=file_sha256(f), bytes=f.stat().st_size)
                             for t, f in self.heads.paths.items()]
        #: the fitted P(part damaged) model that decides per-part review (:mod:`.confidence`); None: the paper's rule
        self.part_confidence = None
        if PART_CONFIDENCE.is_file():
            self.part_confidence = load_part_confidence(PART_CONFIDENCE)
            self.model_files.append(ModelFile(role="part_confidence", file=PART_CONFIDENCE.name,
                                              sha256=file_sha256(PART_CONFIDENCE), bytes=PART_CONFIDENCE.stat().st_size))
        #: the networks of the hot path: the torch models, or their ONNX Runtime versions (same
        #: interface); Grad-CAM always uses the torch backbone (it needs gradients)
        self.net = self.model
        if self.engine == "onnx":
            from ..models.export import standalone_files
            from ..models.onnx_runtime import ensure_onnx_models

            onnx = ensure_onnx_models(self.weights, standalone_files(self.head_paths), threads=torch.get_num_threads())
            self.net = onnx.segmenter
            self.heads.replace(onnx.standalone)
        self._duplicates = self._duplicate_finder()  # photos of the current case (screen_photo)

    def _duplicate_finder(self) -> DuplicateFinder:
        return DuplicateFinder(self.config.duplicate_max_distance)

    def stated_config(self) -> AssessConfig:
        """The config as it runs: ``precision``, ``engine`` and ``threads`` as actually used."""
        return self.config.model_copy(update={"precision": self.precision, "engine": self.engine,
                                              "threads": torch.get_num_threads()})

    def model_thresholds(self) -> dict[str, float]:
        """Thresholds that come with the loaded model files (verification distance, make/model OOD
        at the precision used)."""
        out = {}
        if self.heads.has("verification"):
            out["verification"] = float(self.heads.info("verification").threshold)
        if self.heads.has("make_model_ood"):
            out["make_model_ood"] = float(self.heads.info("make_model_ood").ood_threshold(self.precision))
        if self.part_confidence is not None:
            out["part_confidence"] = float(self.part_confidence.threshold)
        return out

    # ------------------------------------------------------------------ per photo
    def predict(self, image: np.ndarray, gate: bool = True) -> "Prediction":
        """One backbone pass for the image-level heads, then the segmentation decoders.

        The presence gate is decided here, once (:attr:`Prediction.skip_reason`). With ``gate``
        and an installed presence head, a photo the head calls "no vehicle" stops before the
        decoders (they are most of the per-photo cost); ``parts``/``damage`` are then None. Maps
        are at network resolution (longer side ``config.longest_side``).
        """
        cfg = self.config
        x = to_input_tensor(image, cfg.longest_side)
        parts = damage = None
        with inference_context(self.bf16):
            out = self.net.backbone(x, with_logits=True, with_pooled=True)
            score = float(vehicle_score(out.logits)[0])
            heads = self.heads.run(out)
            p_vehicle = self.heads.probability(heads, "presence", "vehicle")
            skip = checks.presence_skip_reason(p_vehicle, cfg.presence_threshold, score, None,
                                               cfg.vehicle_threshold, cfg.part_coverage_threshold)
            if not (gate and p_vehicle is not None and skip is not None):
                self.heads.run_standalone(x, heads)
                logits = self.net.decode(out.features, tuple(x.shape[-2:]), ["parts", "damage"])
                parts = logits["parts"][0].float().softmax(0).numpy()
                damage = logits["damage"][0].float().softmax(0).numpy()
                if p_vehicle is None:  # the fallback rule needs the part map
                    skip = checks.presence_skip_reason(None, cfg.presence_threshold, score,
                                                       part_coverage(parts.argmax(0)), cfg.vehicle_threshold,
                                                       cfg.part_coverage_threshold)
        return Prediction(x, score, p_vehicle, heads, parts, damage, skip)

    def read_photo(self, path: Path) -> DecodedImage | ImageLoadError:
        """Decode one file for :meth:`screen_photo` / :meth:`assess_photo`: the
        :class:`~carcheck.data.images.DecodedImage` (RGB ``uint8`` array and the photo's full size in
        px, from the one open of the file), or the :class:`ImageLoadError` saying why it cannot be
        used (returned, not raised, so that a decode-ahead thread can hand it over)."""
        try:
            return decode_image(path, max_decoded_pixels=self.config.max_decoded_pixels)
        except ImageLoadError as e:
            return e
        except Exception as e:  # the failure boundary of one file: nothing it raises stops the case
            return ImageLoadError(path, f"could not be read ({type(e).__name__}: {e})")

    def screen_photo(self, path: Path, loaded: DecodedImage | np.ndarray | ImageLoadError | None = None
                     ) -> tuple[PhotoReport, PhotoFindings | None, PhotoVisual | None]:
        """One entry of a case behind its failure boundary: :meth:`assess_photo` after the input
        sanity checks of :mod:`.inputs`.

        A photo too small to judge (shorter side < ``config.min_side`` px), blank / near-constant,
        or a duplicate of an earlier photo of this case (:meth:`assess` resets the record) is
        skipped with the reason before the models run, so a repeated photo counts once in
        K_agree and the same-vehicle check. Anything raised on the way becomes a failed entry
        naming the cause: nothing from one photo stops the case. The entry's ``path`` is printable
        text; a name that is not valid UTF-8 also keeps its exact bytes (``path_bytes``). Width,
        height, areas and boxes are in the photo's own pixels when it was decoded at reduced size.

        Args:
            path: the entry.
            loaded: its :meth:`read_photo` result when already decoded; None: decoded here.
        """
        t0 = time.perf_counter()
        name = display_name(path)
        cfg = self.config
        try:
            decoded = self.read_photo(path) if loaded is None else loaded
            if isinstance(decoded, ImageLoadError):
                result = self.assess_photo(path, decoded)
            else:
                image = decoded.array if isinstance(decoded, DecodedImage) else decoded
                w, h = ((decoded.width, decoded.height) if isinstance(decoded, DecodedImage)
                        else (image.shape[1], image.shape[0]))
                reason = (too_small_reason(w, h, cfg.min_side)
                          or blank_reason(image, cfg.blank_max_std, cfg.blank_max_range)
                          or self._duplicates.check(name, image))
                if reason is not None:
                    result = (PhotoReport(path=name, status="skipped", reason=reason, width=w, height=h,
                                          seconds=round(time.perf_counter() - t0, 3)), None, None)
                else:
                    result = self.assess_photo(path, image)
                    to_photo_pixels(result[0], w, h)
        except Exception as e:  # the failure boundary of one entry
            result = (PhotoReport(path=name, status="failed", reason=display_name(
                f"could not be assessed ({type(e).__name__}: {e})")[:300]), None, None)
        result[0].path_bytes = exact_name_bytes(path)
        return result

    def assess_photo(self, path: Path, loaded: DecodedImage | np.ndarray | ImageLoadError | None = None
                     ) -> tuple[PhotoReport, PhotoFindings | None, PhotoVisual | None]:
        """Assess one file; never raises for bad input (the report says why).

        Areas and boxes are in pixels of the array the models were given (:meth:`screen_photo`
        rescales them to the photo's own size when it was decoded at reduced size).

        Args:
            path: the file.
            loaded: its :meth:`read_photo` result when already decoded (by the decode-ahead
                thread of :meth:`assess`); None: decoded here.
        """
        t0 = time.perf_counter()
        name = display_name(path)
        image = self.read_photo(path) if loaded is None else loaded
        if isinstance(image, ImageLoadError):
            return PhotoReport(path=name, status="failed", reason=image.reason), None, None
        if isinstance(image, DecodedImage):
            image = image.array
        h, w = image.shape[:2]
        pred = self.predict(image)
        score, p_vehicle, parts, damage = pred.vehicle_score, pred.presence, pred.parts, pred.damage
        ptype = self._photo_type(pred.heads)
        if ptype is not None and not ptype.search_exterior_damage and ptype.type != "no_vehicle":
            # not an exterior photo: interior keeps the car-state heads, the others are listed with their type
            interior = ptype.type == "interior"
            report = PhotoReport(path=name, status="assessed" if interior else "skipped", width=w, height=h,
                                 vehicle_score=round(score, 4),
                                 presence_probability=None if p_vehicle is None else round(p_vehicle, 4),
                                 reason=None if interior else ptype.reason, photo_type=ptype)
            if interior:
                report.quality = check_quality(image, self.config.quality, photo_type=ptype.type)
                for task in self.heads.state_tasks():
                    if task not in ("damaged", "severity"):  # exterior-damage heads say nothing about an interior
                        report.car_state[task] = head_result(task, pred.heads.logits[task], self.heads.info(task))
            report.seconds = round(time.perf_counter() - t0, 3)
            return report, None, None
        if pred.skip_reason is not None:
            return (PhotoReport(path=name, status="skipped", width=w, height=h, vehicle_score=round(score, 4),
                                presence_probability=None if p_vehicle is None else round(p_vehicle, 4),
                                reason=pred.skip_reason, photo_type=ptype,
                                seconds=round(time.perf_counter() - t0, 3)), None, None)
        fc = self.config.fusion
        part_label = parts.argmax(0).astype(np.uint8)
        if fc.end_dominance is not None:  # one end of the car per photo (a trunk read as a hood in a rear view)
            part_label = consistent_ends(part_label, ["background", *self.part_names], fc.end_dominance)
        damage_label = damage.argmax(0).astype(np.uint8)
        vis = visible_parts(part_label, self.part_names, fc)
        closeup = len(vis) <= fc.closeup_max_parts
        regions = damaged_parts(parts, damage, self.part_names, self.damage_names, fc, part_label, damage_label)
        regions = apply_plausibility(regions, part_label, self.part_names, self.plausibility, fc.plausibility,
                                     fc.plausibility_dilation_px)
        nh, nw = part_label.shape
        sx, sy = w / nw, h / nh
        dets = []
        per_key: dict[tuple[str, str], list] = {}  # (part, damage) -> [max C_base, summed fraction of the part]
        region_reasons: dict[tuple[str, str], list[str]] = {}
        for r in regions:
            frac_part = r.area / max(1, r.part_area)
            dets.append(PhotoDetection(
                part=r.part, damage=r.damage, area_px=scale_area(r.area, sx, sy),
                area_fraction_of_part=round(frac_part, 4), area_fraction_of_image=round(r.area / (nh * nw), 5),
                size_class=size_class(frac_part, fc, closeup), c_base=round(r.c_base, 4),
                bbox_xywh=scale_bbox(r.bbox, sx, sy), reassigned_from=r.reassigned_from,
                review_reasons=list(r.review_reasons),
                size_cm=region_size_cm(r.mask, part_label, self.part_names, r.part, self.config.size)))
            agg = per_key.setdefault((r.part, r.damage), [0.0, 0.0])
            agg[0] = max(agg[0], r.c_base)
            agg[1] += frac_part
            if r.review_reasons:
                region_reasons.setdefault((r.part, r.damage), []).extend(r.review_reasons)
        # several regions of one (part, damage) pair in a photo: the part's damaged share is their sum
        findings = {k: (c, f, size_class(f, fc, closeup)) for k, (c, f) in per_key.items()}
        report = PhotoReport(path=name, status="assessed", width=w, height=h, vehicle_score=round(score, 4),
                             presence_probability=None if p_vehicle is None else round(p_vehicle, 4),
                             visible_parts=vis, view_type="close-up" if closeup else "full view", detections=dets,
                             photo_type=ptype)
        kind = (ptype.type if ptype is not None and ptype.type in EXTERIOR_TYPES
                else "exterior_closeup" if closeup else "exterior_full")
        report.quality = check_quality(image, self.config.quality, photo_type=kind, vehicle_mask=part_label > 0)
        self._image_level(report, pred.heads)
        report.seconds = round(time.perf_counter() - t0, 3)
        img_small = (pred.x[0].permute(1, 2, 0).float().clamp(0, 1).mul(255).round().to(torch.uint8).numpy())
        visual = PhotoVisual(img_small, part_label, damage_label, pred.heads)
        return report, PhotoFindings(name, set(vis), findings, region_reasons, closeup), visual

    def _photo_type(self, heads: PhotoHeadOutputs):
        """The photo's :class:`~carcheck.schema.PhotoTypeDecision` from the photo-type head
        (:mod:`.photo_type`), or None when the head is not installed."""
        if "photo_type" not in heads.logits:
            return None
        info = self.heads.info("photo_type")
        return decide_photo_type(probabilities_from_logits(heads.logits["photo_type"].tolist(), info.classes),
                                 self.config.photo_type)

    def _image_level(self, report: PhotoReport, heads: PhotoHeadOutputs) -> None:
        """Damage filter, car state, severity and make/model of one assessed photo (in place), by
        the rules of :mod:`.checks`. Review reasons are added later, by :mod:`.review`."""
        cfg, hs = self.config, self.heads
        has_damage = bool(report.detections)
        p_damaged = hs.probability(heads, "damaged", "damaged")
        if p_damaged is not None:
            verdict = checks.damage_filter_verdict(p_damaged, has_damage, cfg.clean_threshold, cfg.damaged_threshold)
            report.damage_filter = DamageFilter(probability_damaged=round(p_damaged, 4), verdict=verdict)
        for task in hs.state_tasks():
            if task == "severity" and not checks.severity_applies(has_damage, p_damaged, cfg.severity_min_p_damaged):
                continue  # a severity grade only means something for a damaged car
            report.car_state[task] = head_result(task, heads.logits[task], hs.info(task))
        if hs.has("make_model"):
            res = head_result("make_model", heads.logits["make_model"], hs.info("make_model"))
            if hs.has("make_model_ood"):
                mls = float(heads.logits["make_model_ood"].max())
                res.ood_score = round(mls, 4)
                if checks.ood_out_of_scope(mls, hs.info("make_model_ood").ood_threshold(self.precision)):
                    res.out_of_scope, res.label, res.probability = True, None, None
            report.make_model = res

    # ------------------------------------------------------------------ per case
    def assess(self, paths: Sequence[str | Path], case_id: str | None = None,
               track: Callable[..., Iterable] = lambda it, **k: it) -> tuple[CaseReport, dict[str, PhotoVisual]]:
        """Assess the photos of one case.

        Args:
            paths: files and/or folders (see :func:`~.inputs.expand_inputs`).
            case_id: defaults to a random id.
            track: progress wrapper, e.g. ``rich.progress.track``.
        Returns:
            (the :class:`~carcheck.schema.CaseReport`, path -> :class:`PhotoVisual` of assessed photos)
        """
        inputs = expand_inputs(paths)
        photos, pf, visuals = self._run_photos(inputs.files, track)
        # reconcile the views
        rel = view_relations(pf)
        for rep in photos:
            if rep.path in rel:
                rep.same_perspective_as = rel[rep.path]["same_perspective_as"]
                rep.closeup_of = rel[rep.path]["closeup_of"]
        case = reconcile(pf, self.config.review_threshold)
        evidence = {ph.path: photo_evidence(ph) for ph in photos if ph.status == "assessed"}
        parts = reconcile_parts(pf, case, self.config.review_threshold, evidence, self.part_confidence)
        vehicle, consistency = self._identity(photos, visuals)
        # review: image-level flags first (Grad-CAM is drawn for those photos), then every reason
        vthr = consistency.threshold if consistency is not None else None
        if self.config.gradcam and self.heads.has("damaged"):
            self._gradcam([p for p in photos if p.path in visuals and review.image_level_reasons(p, vthr)], visuals)
            trim_heap()  # the backward passes' activations
        for ph in photos:
            if ph.status == "assessed":
                k = sum(c.needs_review and ph.path in c.photos for c in case)
                ph.review_reasons = review.photo_review_reasons(ph, vthr, k)
        report = build_report(
            case_id=case_id, files=len(inputs.files), photos=photos, findings=[_finding(c) for c in case],
            config=self.stated_config(), models=self._models(), model_files=self.model_files,
            model_thresholds=self.model_thresholds(), taxonomies=dict(self.model.taxonomies), vehicle=vehicle,
            consistency=consistency, ignored_files=[display_name(p) for p in inputs.ignored],
            parts=[_part_finding(p) for p in parts])
        finding_sizes(report)  # each finding's size in cm from the photo showing its part best
        self._claims(report, inputs.files, visuals)
        return report, visuals

    def _claims(self, report: CaseReport, files: Sequence[Path], visuals: dict[str, PhotoVisual]) -> None:
        """Repair estimate and, with a reuse index, the reused-photo / EXIF check (issue 19), in place."""
        from .estimate import estimate_case

        report.estimate = estimate_case(report.findings, report.vehicle, *self.cost_table)
        if self.reuse_index is not None:
            from .reuse import reuse_check

            # report.photos has one entry per file, in order; photos are hashed at network resolution
            report.reuse, reasons = reuse_check(self.reuse_index, report.case_id, [
                (p.path, f, visuals[p.path].image) for p, f in zip(report.photos, files) if p.path in visuals])
            for p in report.photos:
                p.review_reasons += [r for r in reasons.get(p.path, []) if r not in p.review_reasons]

    def _run_photos(self, files: list[Path], track: Callable[..., Iterable]
                    ) -> tuple[list[PhotoReport], list[PhotoFindings], dict[str, PhotoVisual]]:
        """Every entry through :meth:`screen_photo`; photo i+1 is decoded in a thread while photo i
        runs through the networks (Pillow and torch release the GIL while they work), unless its
        decode buffer exceeds :data:`PREFETCH_MAX_BYTES` (a large PNG/TIFF): that one is decoded
        after photo i, so that its buffer and the networks' activations are never in memory at once
        (issue 20: peak RSS within 1.5 GB). Freed heap is handed back after every photo."""
        self._duplicates = self._duplicate_finder()
        photos, pf, visuals = [], [], {}

        def ahead_of(f: Path):
            if decode_buffer_bytes(f, max_decoded_pixels=self.config.max_decoded_pixels) > PREFETCH_MAX_BYTES:
                return None  # read when its turn comes
            return pool.submit(self.read_photo, f)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="carcheck-decode") as pool:
            ahead = ahead_of(files[0]) if files else None
            for i, f in enumerate(track(files, description="assessing photos")):
                loaded = ahead.result() if ahead is not None else self.read_photo(f)
                if i + 1 < len(files):
                    ahead = ahead_of(files[i + 1])
                rep, fnd, vis = self.screen_photo(f, loaded)
                del loaded
                trim_heap()
                photos.append(rep)
                if fnd is not None:
                    pf.append(fnd)
                    visuals[rep.path] = vis
        return photos, pf, visuals

    def _models(self) -> dict[str, str]:
        """Role -> model file names (the HTML header; the hashes are in ``model_files``)."""
        return {"segmenter": ", ".join(w.name for w in self.weights), "backbone": self.model.backbone.variant,
                "vehicle_gate": (self.heads.files["presence"] if self.heads.has("presence")
                                 else "ImageNet vehicle classes (summed softmax) OR part coverage"),
                **{f"head:{t}": f for t, f in self.heads.files.items() if t != "presence"}}

    def _identity(self, photos: list[PhotoReport], visuals: dict[str, PhotoVisual]):
        """Case-level make/model and same-vehicle check (:mod:`.identity`) over the assessed photos;
        sets each photo's ``vehicle_match``. Returns (VehicleIdentity | None, Consistency | None)."""
        assessed = [p for p in photos if p.status == "assessed" and p.path in visuals]
        vehicle = consistency = None
        if self.heads.has("make_model") and assessed:
            logits = torch.stack([visuals[p.path].heads.logits["make_model"] for p in assessed])
            vehicle = make_model_vote(logits, self.heads.info("make_model").classes,
                                      [p.make_model is not None and not p.make_model.out_of_scope for p in assessed])
        if self.heads.has("verification") and assessed:
            head, info = self.heads.get("verification")
            res = same_vehicle_check([p.path for p in assessed],
                                     torch.stack([visuals[p.path].heads.embedding for p in assessed]),
                                     head.distance, float(info.threshold))
            for p in assessed:
                p.vehicle_match = res.matches.get(p.path)
            consistency = res.consistency
        return vehicle, consistency

    def _gradcam(self, flagged: list[PhotoReport], visuals: dict[str, PhotoVisual]) -> None:
        """Grad-CAM of the damage filter's decision on each flagged photo (stored on its visual)."""
        from ..models.explain import grad_cam

        head, info = self.heads.get("damaged")
        for p in flagged:
            v = visuals[p.path]
            x = to_input_tensor(v.image, max(v.image.shape[:2]))
            cls = int(v.heads.logits["damaged"].argmax())
            cam = grad_cam(self.model.backbone, head, x, cls)
            v.gradcam = cam  # the report draws it over the privacy-blurred photo
            p.gradcam = f"damaged:{info.classes[cls]}"


def _finding(c: CaseFinding) -> Finding:
    """A reconciled finding as the report states it (fractions rounded to 4 decimals)."""
    return Finding(part=c.part, damage=c.damage, size_class=c.size_class, area_fraction_of_part=round(c.area_fraction, 4),
                   c_base=round(c.c_base, 4), k_agree=round(c.k_agree, 4), c_refined=round(c.c_refined, 4),
                   needs_review=c.needs_review, review_reasons=c.review_reasons, photos=c.photos)


def _part_finding(p: PartCaseFinding) -> PartFinding:
    """A physical part's reconciled damage as the report states it (fractions rounded to 4 decimals)."""
    return PartFinding(part=p.part, damages=p.damages, c_base=round(p.c_base, 4), k_agree=round(p.k_agree, 4),
                       c_refined=round(p.c_refined, 4), views_damaged=p.views_damaged, views_visible=p.views_visible,
                       photos=p.photos, needs_review=p.needs_review, review_reasons=p.review_reasons,
                       p_damaged=p.p_damaged, features=p.features, grade=p.grade, grade_reason=p.grade_reason)


def assess(paths: Sequence[str | Path], case_id: str | None = None, config: AssessConfig | None = None,
           weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS, out_dir: str | Path | None = None,
           heads: dict[str, str | Path] | None = None, extra_heads: Sequence[str | Path] = (),
           assessor: Assessor | None = None, track: Callable[..., Iterable] = lambda it, **k: it) -> CaseReport:
    """Assess the photos of one case; optionally write ``report.json`` and ``report.html`` to ``out_dir``.

    The one code path of the Python API and ``carcheck assess PATHS --out DIR`` (the CLI passes its
    already loaded ``assessor``). Bad files are recorded in the report (``status="failed"`` with a
    reason), never raised.

    Args:
        assessor: models already loaded (then ``config``, ``weights``, ``heads``, ``extra_heads`` are
            not used); None: an :class:`Assessor` is built from them.
        track: progress wrapper, e.g. ``rich.progress.track``.
    Raises:
        FileNotFoundError / ValueError / KeyError: from :class:`Assessor` (missing or bad model files).
        OSError: the report cannot be written to ``out_dir``.
    """
    assessor = assessor or Assessor(config, weights, heads, extra_heads)
    report, visuals = assessor.assess(paths, case_id, track=track)
    if out_dir is not None:
        from ..report.html import write_report

        write_report(report, visuals, out_dir, assessor.part_names, assessor.damage_names)
    return report
