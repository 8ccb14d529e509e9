"""Assess one case: gate, segment, fuse, reconcile (Ma et al., IEEE T-ITS 2023, Fig. 1).

One backbone pass per photo feeds the vehicle-presence gate, both segmentation heads (parts,
damage) and every installed image-level head on the shared features (damage filter, severity,
car state, make/model OOD). Models with their own fine-tuned backbone
(:class:`~carcheck.models.classifier.StandaloneNet`: the shipped same-vehicle embedding and
make/model classifier, where the frozen features were measured too weak) add one small pass each,
only on photos that pass the presence gate. Models are loaded once per :class:`Assessor`. A photo
that cannot be read is recorded with its reason; it never stops the case.

Image-level checks (when their heads are installed):

- presence: P(vehicle) below ``presence_threshold`` -> the photo is skipped as out of scope;
  without the head, the ImageNet vehicle score OR part coverage rule of :mod:`.gate` applies.
- damage filter (CarDD, Wang et al., section V-G): P(undamaged) > ``clean_threshold`` and no
  damage segmented -> "clean"; the filter and the segmenter disagreeing -> the photo is flagged.
- severity: a grade per photo with damage.
- make/model: top-3 per photo and averaged over the case; out of scope when the OOD head's max
  logit is below its threshold (a car outside the known models).
- same vehicle: photos far from the case's majority vehicle are flagged "different vehicle?".
- Grad-CAM of the damage filter for every flagged photo, shown in the HTML report.
"""

from __future__ import annotations

import datetime as _dt
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .. import __version__
from ..data.images import DecodedImage, ImageLoadError, decode_image, display_name
from ..data.taxonomy import get_taxonomy, make_of
from ..models.backbone import inference_context
from ..models.inference import DEFAULT_SEGMENTERS, load_segmenters, to_input_tensor
from ..models.runtime import resolve_runtime, set_threads
from ..report.privacy import PRIVACY_NOTE
from ..report.schema import (AssessConfigModel, CaseReport, CaseSummary, ClassScore, Consistency, DamageFilter,
                             Finding, PhotoDetection, PhotoReport, VehicleIdentity, VehicleMatch)
from .agreement import PhotoFindings, reconcile, view_relations
from .fusion import FusionConfig, damaged_parts, size_class, visible_parts
from .consistency import case_consistency
from .gate import DEFAULT_PART_COVERAGE_THRESHOLD, DEFAULT_VEHICLE_THRESHOLD, part_coverage, passes_gate, vehicle_score
from .image_heads import ImageHeads, PhotoHeadOutputs, head_result
from .inputs import (MIN_SIDE, DuplicateFinder, blank_reason, collect_photos, exact_name_bytes, expand_inputs,
                     too_small_reason)

__all__ = ["AssessConfig", "Assessor", "PhotoVisual", "assess", "collect_photos"]

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
        min_side: photos with a shorter side below this many px are skipped as too small to judge.
        max_decoded_pixels: larger photos are decoded at reduced size (JPEG: DCT scaling), to at most
            this many pixels (the networks see 512 px; sizes and areas stay in the photo's pixels).
        precision: ``auto`` (default: bf16 only on CUDA or a CPU with native bf16, else fp32),
            ``fp32`` or ``bf16`` (:func:`~carcheck.models.runtime.resolve_precision`); the report
            states the precision actually used.
        engine: ``auto`` (ONNX Runtime where the networks run in fp32, eager torch where bf16 runs
            natively; :func:`~carcheck.models.runtime.resolve_engine`), ``torch`` or ``onnx``. The
            ONNX models are exported on first use to a cache folder (about 5 s on 2 cores, once per weights: `carcheck export onnx` measured 4.9 s).
        threads: torch threads of this process (None: every core); set it when several
            assessors run on one machine (:func:`~carcheck.models.runtime.set_threads`).
        presence_threshold: P(vehicle) of the presence head below which a photo is out of scope.
        clean_threshold: P(undamaged) above which a photo without segmented damage is "clean"
            and a photo with segmented damage is flagged (CarDD V-G uses 0.9).
        damaged_threshold: P(damaged) above which a photo without segmented damage is flagged.
        gradcam: compute Grad-CAM maps of the damage filter for flagged photos (HTML report).
    """

    vehicle_threshold: float = DEFAULT_VEHICLE_THRESHOLD
    part_coverage_threshold: float = DEFAULT_PART_COVERAGE_THRESHOLD
    fusion: FusionConfig = field(default_factory=FusionConfig)
    review_threshold: float = 0.5
    longest_side: int = 512
    min_side: int = MIN_SIDE
    max_decoded_pixels: int = 8_000_000
    precision: str = "auto"
    threads: int | None = None
    engine: str = "auto"
    presence_threshold: float = 0.5
    clean_threshold: float = 0.9
    damaged_threshold: float = 0.9
    gradcam: bool = True


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
    """

    x: torch.Tensor
    vehicle_score: float
    presence: float | None
    heads: PhotoHeadOutputs
    parts: np.ndarray | None
    damage: np.ndarray | None


@dataclass
class PhotoVisual:
    """What the HTML report draws for an assessed photo (network resolution)."""

    image: np.ndarray  # (h, w, 3) uint8 RGB, resized to longest_side
    part_label: np.ndarray  # (h, w) uint8
    damage_label: np.ndarray  # (h, w) uint8
    heads: PhotoHeadOutputs | None = None
    gradcam: np.ndarray | None = None  # (h, w) float32 Grad-CAM map in [0, 1], for flagged photos


def _to_photo_pixels(report: PhotoReport, width: int, height: int) -> None:
    """Scale a photo report made on a reduced-size decode to the photo's ``width`` x ``height`` px
    (sizes, areas in px², boxes), in place."""
    if report.width is None or report.height is None or (report.width, report.height) == (width, height):
        return
    sx, sy = width / report.width, height / report.height
    report.width, report.height = width, height
    for d in report.detections:
        d.area_px = round(d.area_px * sx * sy, 1)
        d.bbox_xywh = [round(v * f, 1) for v, f in zip(d.bbox_xywh, (sx, sy, sx, sy))]


class Assessor:
    """Loads the models once and assesses cases.

    Args:
        config: thresholds; defaults as in :class:`AssessConfig`.
        weights: segmenter safetensors file(s) providing ``parts`` and ``damage`` heads (several
            files share one backbone pass; the first file with a head serves that task).
        heads: image-level head files by task (default: the shipped ones that are installed;
            ``{}`` for none).
        extra_heads: more head files, e.g. a SOCAR dirt classifier (shown under car state).

    Raises:
        FileNotFoundError / ValueError: from :func:`~carcheck.models.inference.load_segmenter`.
        KeyError: if the weights lack a ``parts`` or ``damage`` head.
    """

    def __init__(self, config: AssessConfig | None = None,
                 weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS,
                 heads: dict[str, str | Path] | None = None, extra_heads: Sequence[str | Path] = ()) -> None:
        self.config = config or AssessConfig()
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
        self.head_paths = None if heads is None else {k: Path(v) for k, v in heads.items()}
        self.heads = ImageHeads(self.model.backbone, self.head_paths,
                                extra_heads)
        #: the networks of the hot path: the torch models, or their ONNX Runtime versions (same
        #: interface); Grad-CAM always uses the torch backbone (it needs gradients)
        self.net = self.model
        if self.engine == "onnx":
            from ..models.export import standalone_files
            from ..models.onnx_runtime import ensure_onnx_models

            onnx = ensure_onnx_models(self.weights, standalone_files(self.head_paths), threads=torch.get_num_threads())
            self.net = onnx.segmenter
            self.heads.replace(onnx.standalone)
        self._duplicates = DuplicateFinder()  # photos of the current case (screen_photo)

    # ------------------------------------------------------------------ per photo
    def predict(self, image: np.ndarray, gate: bool = True) -> "Prediction":
        """One backbone pass for the image-level heads, then the segmentation decoders.

        With ``gate`` and an installed presence head, a photo the head calls "no vehicle" stops
        before the decoders (they are most of the per-photo cost); ``parts``/``damage`` are then None.
        Maps are at network resolution (longer side ``config.longest_side``).
        """
        x = to_input_tensor(image, self.config.longest_side)
        parts = damage = None
        with inference_context(self.bf16):
            out = self.net.backbone(x, with_logits=True, with_pooled=True)
            score = float(vehicle_score(out.logits)[0])
            heads = self.heads.run(out)
            p_vehicle = self.heads.probability(heads, "presence", "vehicle")
            if not (gate and p_vehicle is not None and p_vehicle < self.config.presence_threshold):
                self.heads.run_standalone(x, heads)
                logits = self.net.decode(out.features, tuple(x.shape[-2:]), ["parts", "damage"])
                parts = logits["parts"][0].float().softmax(0).numpy()
                damage = logits["damage"][0].float().softmax(0).numpy()
        return Prediction(x, score, p_vehicle, heads, parts, damage)

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
        try:
            decoded = self.read_photo(path) if loaded is None else loaded
            if isinstance(decoded, ImageLoadError):
                result = self.assess_photo(path, decoded)
            else:
                image = decoded.array if isinstance(decoded, DecodedImage) else decoded
                w, h = ((decoded.width, decoded.height) if isinstance(decoded, DecodedImage)
                        else (image.shape[1], image.shape[0]))
                reason = (too_small_reason(w, h, self.config.min_side) or blank_reason(image)
                          or self._duplicates.check(name, image))
                if reason is not None:
                    result = (PhotoReport(path=name, status="skipped", reason=reason, width=w, height=h,
                                          seconds=round(time.perf_counter() - t0, 3)), None, None)
                else:
                    result = self.assess_photo(path, image)
                    _to_photo_pixels(result[0], w, h)
        except Exception as e:  # the failure boundary of one entry
            result = (PhotoReport(path=name, status="failed", reason=display_name(
                f"could not be assessed ({type(e).__name__}: {e})")[:300]), None, None)
        result[0].path_bytes = exact_name_bytes(path)
        return result

    def assess_photo(self, path: Path, loaded: DecodedImage | np.ndarray | ImageLoadError | None = None
                     ) -> tuple[PhotoReport, PhotoFindings | None, PhotoVisual | None]:
        """Assess one file; never raises for bad input (the report says why).

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
        score, p_vehicle, parts, damage, x, heads = (pred.vehicle_score, pred.presence, pred.parts, pred.damage,
                                                     pred.x, pred.heads)
        if p_vehicle is not None:
            if p_vehicle < self.config.presence_threshold:
                return (PhotoReport(path=name, status="skipped", width=w, height=h, vehicle_score=round(score, 4),
                                    presence_probability=round(p_vehicle, 4),
                                    reason=(f"out of scope: no vehicle (presence head P(vehicle) {p_vehicle:.3f} < "
                                            f"{self.config.presence_threshold:.2f})"),
                                    seconds=round(time.perf_counter() - t0, 3)), None, None)
        elif not passes_gate(score, coverage := part_coverage(parts.argmax(0)), self.config.vehicle_threshold,
                             self.config.part_coverage_threshold):
            return (PhotoReport(path=name, status="skipped", width=w, height=h, vehicle_score=round(score, 4),
                                reason=(f"no vehicle: presence score {score:.3f} < {self.config.vehicle_threshold:.3f} "
                                        f"and part coverage {coverage:.2f} < {self.config.part_coverage_threshold:.2f}"),
                                seconds=round(time.perf_counter() - t0, 3)), None, None)
        fc = self.config.fusion
        part_label = parts.argmax(0).astype(np.uint8)
        damage_label = damage.argmax(0).astype(np.uint8)
        vis = visible_parts(part_label, self.part_names, fc)
        closeup = len(vis) <= fc.closeup_max_parts
        regions = damaged_parts(parts, damage, self.part_names, self.damage_names, fc, part_label, damage_label)
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
                             presence_probability=None if p_vehicle is None else round(p_vehicle, 4),
                             visible_parts=vis, view_type="close-up" if closeup else "full view", detections=dets)
        self._image_level(report, heads)
        report.seconds = round(time.perf_counter() - t0, 3)
        img_small = (x[0].permute(1, 2, 0).float().clamp(0, 1).mul(255).round().to(torch.uint8).numpy())
        visual = PhotoVisual(img_small, part_label, damage_label, heads)
        return report, PhotoFindings(name, set(vis), findings), visual

    def _image_level(self, report: PhotoReport, heads: PhotoHeadOutputs) -> None:
        """Damage filter, car state, severity and make/model of one assessed photo (in place)."""
        cfg, hs = self.config, self.heads
        has_damage = bool(report.detections)
        p_damaged = hs.probability(heads, "damaged", "damaged")
        if p_damaged is not None:
            if not has_damage and 1 - p_damaged > cfg.clean_threshold:
                verdict = "clean"
            elif has_damage and 1 - p_damaged > cfg.clean_threshold:
                verdict = "no damage?"
                report.review_reasons.append(f"damage filter calls the photo undamaged (P = {1 - p_damaged:.2f}) "
                                             "but damage was segmented")
            elif not has_damage and p_damaged > cfg.damaged_threshold:
                verdict = "damage missed?"
                report.review_reasons.append(f"damage filter sees damage (P = {p_damaged:.2f}) that segmentation "
                                             "did not find")
            else:
                verdict = "agrees"
            report.damage_filter = DamageFilter(probability_damaged=round(p_damaged, 4), verdict=verdict)
        for task in hs.state_tasks():
            if task == "severity" and not (has_damage or (p_damaged or 0) > 0.5):
                continue  # a severity grade only means something for a damaged car
            report.car_state[task] = head_result(task, heads.logits[task], hs.info(task))
        if hs.has("make_model"):
            res = head_result("make_model", heads.logits["make_model"], hs.info("make_model"))
            if hs.has("make_model_ood"):
                info = hs.info("make_model_ood")
                mls = float(heads.logits["make_model_ood"].max())
                res.ood_score = round(mls, 4)
                if mls < info.ood_threshold(self.precision):
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
            (the :class:`~carcheck.report.schema.CaseReport`, path -> :class:`PhotoVisual` of assessed photos)
        """
        inputs = expand_inputs(paths)
        files = inputs.files
        self._duplicates = DuplicateFinder()
        photos, pf, visuals = [], [], {}
        # photo i+1 is decoded in a thread while photo i runs through the networks (Pillow and
        # torch release the GIL while they work)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="carcheck-decode") as pool:
            ahead = pool.submit(self.read_photo, files[0]) if files else None
            for i, f in enumerate(track(files, description="assessing photos")):
                loaded = ahead.result()
                if i + 1 < len(files):
                    ahead = pool.submit(self.read_photo, files[i + 1])
                rep, fnd, vis = self.screen_photo(f, loaded)
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
        vehicle, consistency = self._identity(photos, visuals)
        findings = [Finding(part=c.part, damage=c.damage, size_class=c.size_class,
                            area_fraction_of_part=round(c.area_fraction, 4), c_base=round(c.c_base, 4),
                            k_agree=round(c.k_agree, 4), c_refined=round(c.c_refined, 4), needs_review=c.needs_review,
                            review_reasons=c.review_reasons, photos=c.photos) for c in case]
        # Grad-CAM for photos an image-level check flagged (filter disagreement, different vehicle?)
        if self.config.gradcam and self.heads.has("damaged"):
            self._gradcam([p for p in photos if p.review_reasons and p.path in visuals], visuals)
        for ph in photos:
            k = sum(c.needs_review and ph.path in c.photos for c in case)
            if k:
                ph.review_reasons.append(f"{k} finding(s) seen in this photo need review")
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
        if consistency is not None and consistency.different_vehicle:
            verdict += f" {len(consistency.different_vehicle)} photo(s) may show a different vehicle."
        clean = sum(p.damage_filter is not None and p.damage_filter.verdict == "clean" for p in photos)
        if clean:
            verdict += f" {clean} photo(s) confirmed clean by the damage filter."
        fc = self.config.fusion
        report = CaseReport(
            case_id=display_name(case_id) if case_id else uuid.uuid4().hex[:12],
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            carcheck_version=__version__,
            models={"segmenter": ", ".join(w.name for w in self.weights), "backbone": self.model.backbone.variant,
                    "vehicle_gate": (self.heads.files["presence"] if self.heads.has("presence")
                                     else "ImageNet vehicle classes (summed softmax) OR part coverage"),
                    **{f"head:{t}": f for t, f in self.heads.files.items() if t != "presence"}},
            config=AssessConfigModel(vehicle_threshold=self.config.vehicle_threshold,
                                     part_coverage_threshold=self.config.part_coverage_threshold,
                                     min_region_fraction=fc.min_region_fraction,
                                     visible_part_fraction=fc.visible_part_fraction,
                                     closeup_max_parts=fc.closeup_max_parts, size_thresholds=list(fc.size_thresholds),
                                     review_threshold=self.config.review_threshold,
                                     longest_side_px=self.config.longest_side,
                                     precision=self.precision, engine=self.engine, threads=torch.get_num_threads(),
                                     presence_threshold=self.config.presence_threshold if self.heads.has("presence") else None,
                                     clean_threshold=self.config.clean_threshold if self.heads.has("damaged") else None,
                                     verification_threshold=(self.heads.info("verification").threshold
                                                             if self.heads.has("verification") else None)),
            summary=CaseSummary(photos=len(files), assessed=n["assessed"], skipped=n["skipped"], failed=n["failed"],
                                findings=len(findings), findings_for_review=review, damaged_parts=damaged,
                                verdict=verdict),
            findings=findings, photos=photos, vehicle=vehicle, consistency=consistency, privacy=PRIVACY_NOTE,
            ignored_files=[display_name(p) for p in inputs.ignored])
        return report, visuals

    def _identity(self, photos: list[PhotoReport], visuals: dict[str, PhotoVisual]
                  ) -> tuple[VehicleIdentity | None, Consistency | None]:
        """Case-level make/model (mean probabilities over the in-scope photos) and same-vehicle check."""
        assessed = [p for p in photos if p.status == "assessed" and p.path in visuals]
        vehicle = None
        if self.heads.has("make_model") and assessed:
            info = self.heads.info("make_model")
            in_scope = [p for p in assessed if p.make_model is not None and not p.make_model.out_of_scope]
            use = in_scope or assessed
            prob = torch.stack([visuals[p.path].heads.logits["make_model"].softmax(0) for p in use]).mean(0)
            top = prob.topk(min(3, len(prob)))
            makes: dict[str, float] = {}
            for c, v in zip(info.classes, prob.tolist()):
                makes[make_of(c)] = makes.get(make_of(c), 0.0) + v
            vehicle = VehicleIdentity(
                make_model_top3=[ClassScore(label=info.classes[int(i)], probability=round(float(v), 4))
                                 for v, i in zip(top.values, top.indices)],
                make_top3=[ClassScore(label=k, probability=round(v, 4))
                           for k, v in sorted(makes.items(), key=lambda kv: -kv[1])[:3]],
                in_scope=len(in_scope) * 2 > len(assessed), known_models=len(info.classes))
        consistency = None
        if self.heads.has("verification") and assessed:
            head, info = self.heads.get("verification")
            emb = torch.stack([visuals[p.path].heads.embedding for p in assessed])
            res = case_consistency(head.distance, emb, float(info.threshold))
            ref = assessed[res.reference].path if res.reference is not None else None
            flagged = []
            for p, d, same in zip(assessed, res.distances, res.same):
                if ref is not None:
                    p.vehicle_match = VehicleMatch(distance=round(d, 4), same_vehicle=same, reference=ref)
                if not same:
                    flagged.append(p.path)
                    p.review_reasons.append(f"different vehicle? (distance {d:.2f} > {info.threshold:.2f} "
                                            f"to {Path(ref).name})")
            consistency = Consistency(checked_photos=len(assessed), threshold=float(info.threshold), reference=ref,
                                      different_vehicle=flagged, note=res.note)
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


def assess(paths: Sequence[str | Path], case_id: str | None = None, config: AssessConfig | None = None,
           weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS, out_dir: str | Path | None = None,
           heads: dict[str, str | Path] | None = None, extra_heads: Sequence[str | Path] = ()) -> CaseReport:
    """Assess the photos of one case; optionally write ``report.json`` and ``report.html`` to ``out_dir``.

    Same result as ``carcheck assess PATHS --out DIR``. Bad files are recorded in the report
    (``status="failed"`` with a reason), never raised.
    """
    assessor = Assessor(config, weights, heads, extra_heads)
    report, visuals = assessor.assess(paths, case_id)
    if out_dir is not None:
        from ..report.html import write_report

        write_report(report, visuals, out_dir, assessor.part_names, assessor.damage_names)
    return report
