"""Assess one case: the orchestrator (Ma et al., IEEE T-ITS 2023, Fig. 1): photos -> models -> rules -> one
complete :class:`~carcheck.schema.CaseReport`, returned with what the HTML draws; the callers (CLI, service,
batch, :func:`carcheck.assess`) write ``report.json`` / ``report.html``. Each step lives in its own module:
:mod:`.inputs` (entries; blank, too small, duplicate photos), :mod:`.runner` (the models, loaded once: one
backbone pass per photo feeds the presence gate of :mod:`.checks`, both decoders and every image-level head;
the photo type), :mod:`.photo` (one photo's model outputs -> detections and image-level results),
:mod:`.quality`, :mod:`.agreement` (views, K_agree, C_refined, per-part findings), :mod:`.identity`,
:mod:`.review` (what needs a person and why), :mod:`.size`, :mod:`.estimate`, :mod:`.reuse`, :mod:`.vehicle_text`
(VIN, odometer) and :mod:`.build` (the report, built once). A photo that cannot be read is recorded with its reason;
it never stops the case; the config (:class:`~carcheck.schema.AssessConfig`) is stated in each report.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..data.image_header import decode_buffer_bytes
from ..data.images import DecodedImage, ImageLoadError, display_name
from ..models.inference import DEFAULT_SEGMENTERS
from ..models.runtime import trim_heap
from ..schema import AssessConfig, CaseReport, PhotoReport
from . import review
from .agreement import PhotoFindings, reconcile, reconcile_parts, view_relations
from .build import build_report, finding_of, part_finding_of, resolve_case_id
from .confidence import photo_evidence
from .inputs import DuplicateFinder, blank_reason, collect_photos, exact_name_bytes, expand_inputs, too_small_reason
from .photo import photo_detections
from .photo_type import EXTERIOR_TYPES
from .quality import check_quality
from .runner import ModelRunner, PhotoVisual, Prediction
from .image_heads import head_result
from .size import size_findings, to_photo_pixels
from .vehicle_text import vehicle_text

__all__ = ["Assessor", "assess", "collect_photos", "PREFETCH_MAX_BYTES"]

#: Photos whose decode buffer is larger than this (bytes) are not decoded ahead, in parallel with the
#: networks, but after the previous photo is done (:meth:`Assessor._run_photos`): 32 MiB is an 8 MP RGB
#: buffer, the largest a JPEG of any size needs at the default ``max_decoded_pixels``.
PREFETCH_MAX_BYTES = 32 * 2 ** 20

PhotoResult = tuple[PhotoReport, "PhotoFindings | None", "PhotoVisual | None"]


class Assessor(ModelRunner):
    """Loads the models once (:class:`~.runner.ModelRunner`) and assesses cases.

    Args:
        config: thresholds; defaults as in :class:`AssessConfig`.
        weights: segmenter safetensors file(s) providing ``parts`` and ``damage`` heads (several files share
            one backbone pass; the first file with a head serves that task).
        heads: image-level head files by task (default: the shipped ones that are installed; ``{}`` for none).
        extra_heads: more head files, e.g. a SOCAR dirt classifier (shown under car state).
        cost_table: the repair estimate's cost table (:mod:`.estimate`): a YAML file, a loaded ``CostTable``,
            or None for the shipped one. Every report gets an ``estimate``.
        reuse_index: a :class:`~.reuse.ReuseIndex`: each case's assessed photos are matched against it and
            each other, the EXIF rules applied, the matches in ``report.reuse`` with review reasons, and the
            case indexed. None: no check.

    Raises:
        FileNotFoundError / ValueError: from :func:`~carcheck.models.inference.load_segmenter`, a bad cost table.
        KeyError: if the weights lack a ``parts`` or ``damage`` head.
    """

    def __init__(self, config: AssessConfig | None = None,
                 weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS,
                 heads: dict[str, str | Path] | None = None, extra_heads: Sequence[str | Path] = (),
                 cost_table=None, reuse_index=None) -> None:
        from .estimate import CostTable, load_cost_table

        #: (table, label) of the repair estimate; CostTableError (a ValueError) for a bad file, before any model loads
        self.cost_table = ((cost_table, f"{cost_table.name} v{cost_table.version}") if isinstance(cost_table, CostTable)
                           else load_cost_table(cost_table))
        self.reuse_index = reuse_index
        super().__init__(config, weights, heads, extra_heads)
        self._duplicates = DuplicateFinder(self.config.duplicate_max_distance)  # photos of the current case

    def screen_photo(self, path: Path, loaded: DecodedImage | ImageLoadError | None = None) -> PhotoResult:
        """One entry behind its failure boundary: :meth:`assess_photo` after the input checks of :mod:`.inputs`
        (too small, blank, a duplicate of an earlier photo of this case: skipped with the reason before the
        models run). Anything raised becomes a failed entry naming the cause. Width, height, areas and boxes
        are in the photo's own pixels when it was decoded at reduced size; a name that is not valid UTF-8
        keeps its exact bytes (``path_bytes``)."""
        t0 = time.perf_counter()
        name, cfg = display_name(path), self.config
        try:
            decoded = self.read_photo(path) if loaded is None else loaded
            if isinstance(decoded, ImageLoadError):
                result = self.assess_photo(path, decoded)
            else:
                image, w, h = decoded.array, decoded.width, decoded.height
                reason = (too_small_reason(w, h, cfg.min_side) or blank_reason(image, cfg.blank_max_std, cfg.blank_max_range)
                          or self._duplicates.check(name, image))
                if reason is not None:
                    result = (PhotoReport(path=name, status="skipped", reason=reason, width=w, height=h,
                                          seconds=round(time.perf_counter() - t0, 3)), None, None)
                else:
                    result = self.assess_photo(path, decoded)
                    to_photo_pixels(result[0], w, h)
        except Exception as e:  # the failure boundary of one entry
            result = (PhotoReport(path=name, status="failed", reason=display_name(
                f"could not be assessed ({type(e).__name__}: {e})")[:300]), None, None)
        result[0].path_bytes = exact_name_bytes(path)
        return result

    def assess_photo(self, path: Path, loaded: DecodedImage | ImageLoadError | None = None) -> PhotoResult:
        """Assess one file; never raises for bad input (the report says why). Areas and boxes are in pixels
        of the array the models were given (``loaded``: its :meth:`read_photo` result; None: decoded here)."""
        t0 = time.perf_counter()
        name = display_name(path)
        image = self.read_photo(path) if loaded is None else loaded
        if isinstance(image, ImageLoadError):
            return PhotoReport(path=name, status="failed", reason=image.reason), None, None
        image = image.array
        h, w = image.shape[:2]
        pred: Prediction = self.predict(image)
        ptype = self._photo_type(pred.heads)
        seen = dict(path=name, width=w, height=h, vehicle_score=round(pred.vehicle_score, 4), photo_type=ptype,
                    presence_probability=None if pred.presence is None else round(pred.presence, 4))
        if ptype is not None and not ptype.search_exterior_damage and ptype.type != "no_vehicle":
            # not an exterior photo: interior keeps the car-state heads, the others are listed with their type
            interior = ptype.type == "interior"
            report = PhotoReport(**seen, status="assessed" if interior else "skipped",
                                 reason=None if interior else ptype.reason)
            if interior:
                report.quality = check_quality(image, self.config.quality, photo_type=ptype.type)
                for task in self.heads.state_tasks():
                    if task not in ("damaged", "severity"):  # exterior-damage heads say nothing about an interior
                        report.car_state[task] = head_result(task, pred.heads.logits[task], self.heads.info(task))
            report.seconds = round(time.perf_counter() - t0, 3)
            return report, None, None
        if pred.skip_reason is not None:
            return (PhotoReport(**seen, status="skipped", reason=pred.skip_reason,
                                seconds=round(time.perf_counter() - t0, 3)), None, None)
        exterior = ptype is None or ptype.type in EXTERIOR_TYPES  # the damage filter judges exterior photos only
        p_dmg = self.heads.probability(pred.heads, "damaged", "damaged") if exterior else None
        d = photo_detections(name, pred.parts, pred.damage, self.part_names, self.damage_names, self.config,
                             self.plausibility, w, h, p_dmg, self.finer_damage(image, pred), exterior)
        report = PhotoReport(**seen, status="assessed", visible_parts=d.visible, detections=d.detections,
                             instances=d.instances, view_type="close-up" if d.closeup else "full view")
        kind = (ptype.type if ptype is not None and ptype.type in EXTERIOR_TYPES
                else "exterior_closeup" if d.closeup else "exterior_full")
        report.quality = check_quality(image, self.config.quality, photo_type=kind, vehicle_mask=d.part_label > 0)
        self._image_level(report, pred.heads)
        plate = self._plate(report, image, pred)
        report.seconds = round(time.perf_counter() - t0, 3)
        img_small = pred.x[0].permute(1, 2, 0).float().clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        return report, d.findings, PhotoVisual(img_small, d.part_label, d.damage_label, pred.heads,
                                               private_regions=pred.private_regions, plate=plate)

    # ------------------------------------------------------------------ per case
    def assess(self, paths: Sequence[str | Path], case_id: str | None = None,
               track: Callable[..., Iterable] = lambda it, **k: it) -> tuple[CaseReport, dict[str, PhotoVisual]]:
        """Assess the photos of one case (files and/or folders, :func:`~.inputs.expand_inputs`; ``case_id``
        default a random id; ``track`` a progress wrapper, e.g. ``rich.progress.track``). Returns (the complete
        :class:`~carcheck.schema.CaseReport`, path -> :class:`PhotoVisual` of assessed photos)."""
        from .estimate import estimate_case  # noqa: I001 - the cost table's YAML reader, only when a case runs
        inputs = expand_inputs(paths)
        case_id = resolve_case_id(case_id)
        photos, pf, visuals = self._run_photos(inputs.files, track)
        rel = view_relations(pf)  # reconcile the views
        for rep in [r for r in photos if r.path in rel]:
            rep.same_perspective_as, rep.closeup_of = rel[rep.path]["same_perspective_as"], rel[rep.path]["closeup_of"]
        case = reconcile(pf, self.config.review_threshold)
        parts = reconcile_parts(pf, case, self.config.review_threshold, {  # + P(part damaged) inputs per photo
            ph.path: photo_evidence(ph) for ph in photos if ph.status == "assessed"}, self.part_confidence)
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
        vehicle = vehicle_text(photos, inputs.files, self.read_photo, vehicle)  # VIN / odometer (OCR: those photos only)
        findings = [finding_of(c) for c in case]
        size_findings(photos, findings)  # each finding's size in cm from the photo showing its part best
        estimate = estimate_case(findings, vehicle, *self.cost_table)
        reuse = self._reuse(case_id, photos, inputs.files, visuals)
        return build_report(
            case_id=case_id, files=len(inputs.files), photos=photos, findings=findings,
            config=self.stated_config(), models=self.models_summary(), model_files=self.model_files,
            model_thresholds=self.model_thresholds(), taxonomies=dict(self.model.taxonomies), vehicle=vehicle,
            consistency=consistency, ignored_files=[display_name(p) for p in inputs.ignored],
            parts=[part_finding_of(p) for p in parts], estimate=estimate, reuse=reuse), visuals

    def _reuse(self, case_id: str, photos: list[PhotoReport], files: Sequence[Path], visuals: dict[str, PhotoVisual]):
        """The reused-photo / EXIF check (issue 19) with a reuse index (else None); its review reasons go to
        the photos. Photos are hashed at network resolution; ``photos`` has one entry per file, in order."""
        if self.reuse_index is None:
            return None
        from .reuse import reuse_check

        matches, reasons = reuse_check(self.reuse_index, case_id, [
            (p.path, f, visuals[p.path].image) for p, f in zip(photos, files) if p.path in visuals])
        for p in photos:
            p.review_reasons += [r for r in reasons.get(p.path, []) if r not in p.review_reasons]
        return matches

    def _run_photos(self, files: list[Path], track: Callable[..., Iterable]
                    ) -> tuple[list[PhotoReport], list[PhotoFindings], dict[str, PhotoVisual]]:
        """Every entry through :meth:`screen_photo`; photo i+1 is decoded in a thread while photo i runs through
        the networks, unless its decode buffer exceeds :data:`PREFETCH_MAX_BYTES` (a large PNG/TIFF): that one
        is decoded after photo i, so its buffer and the networks' activations are never in memory at once
        (issue 20: peak RSS within 1.5 GB). Freed heap is handed back after every photo."""
        self._duplicates = DuplicateFinder(self.config.duplicate_max_distance)
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


def assess(paths: Sequence[str | Path], case_id: str | None = None, config: AssessConfig | None = None,
           weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS, heads: dict[str, str | Path] | None = None,
           extra_heads: Sequence[str | Path] = (), assessor: Assessor | None = None,
           track: Callable[..., Iterable] = lambda it, **k: it) -> CaseReport:
    """Assess the photos of one case: ``(assessor or Assessor(config, weights, heads, extra_heads)).assess``,
    the report only. Bad files are recorded in the report (``status="failed"`` with a reason), never raised.
    To write report.json / report.html: :func:`carcheck.assess` (``out_dir``) or
    :func:`carcheck.report.html.write_report` with :meth:`Assessor.assess`'s visuals.

    Raises:
        FileNotFoundError / ValueError / KeyError: from :class:`Assessor` (missing or bad model files).
    """
    assessor = assessor or Assessor(config, weights, heads, extra_heads)
    return assessor.assess(paths, case_id, track=track)[0]
