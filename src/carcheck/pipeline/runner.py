"""The models of an assessment, loaded once, and what runs them: the segmenters and image-level heads on the
chosen engine (torch or ONNX Runtime) and precision, one photo through them (:meth:`ModelRunner.predict`),
the photo-type decision, the case-level identity checks and Grad-CAM. :class:`~.assess.Assessor` is a
:class:`ModelRunner` that orchestrates the rules around it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import DecodedImage, ImageLoadError, decode_image
from ..data.plausibility import get_plausibility
from ..data.taxonomy import get_taxonomy
from ..models.backbone import inference_context
from ..models.inference import DEFAULT_SEGMENTERS, load_segmenters, to_input_tensor
from ..models.privacy import HEAD_FILE, PrivacyDetector
from ..models.runtime import resolve_runtime, set_threads
from ..schema import AssessConfig, ModelFile, PhotoReport
from ..schema.vehicle import PlateReading
from . import checks
from .confidence import DEFAULT_PATH as PART_CONFIDENCE, load_part_confidence
from .gate import part_coverage, vehicle_score
from .identity import evidence_same_vehicle_check, make_model_vote, same_vehicle_check
from .image_heads import ImageHeads, PhotoHeadOutputs
from .photo import image_level
from .photo_type import decide_photo_type, probabilities_from_logits
from .plate import PlateRead, apply_plate_evidence, mask_plate, plate_decisions, read_plates
from .same_vehicle import DEFAULT_CALIBRATION as SAME_VEHICLE, SameVehicleModel, photo_identity

__all__ = ["ModelRunner", "Prediction", "PhotoVisual", "file_sha256"]


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes. Raises OSError when it cannot be read."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class Prediction:
    """One photo through the models (:meth:`ModelRunner.predict`).

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
    private_regions: list | None = None  # faces / plates (PrivateRegion) in px of x, from the same pass


@dataclass
class PhotoVisual:
    """What the HTML report draws for an assessed photo (network resolution)."""

    image: np.ndarray  # (h, w, 3) uint8 RGB, resized to longest_side
    part_label: np.ndarray  # (h, w) uint8
    damage_label: np.ndarray  # (h, w) uint8
    heads: PhotoHeadOutputs | None = None
    gradcam: np.ndarray | None = None  # (h, w) float32 Grad-CAM map in [0, 1], for flagged photos
    private_regions: list | None = None  # faces / plates in px of image (the blur's cache; None: detect)
    plate: PlateRead | None = None  # the licence plate read (full text: in memory only, never written)


class ModelRunner:
    """Loads the models once (see :class:`~.assess.Assessor` for the arguments).

    Raises:
        FileNotFoundError / ValueError: from :func:`~carcheck.models.inference.load_segmenter`, an unknown
            precision or engine, or onnx with bf16.
        KeyError: if the weights lack a ``parts`` or ``damage`` head.
    """

    def __init__(self, config: AssessConfig | None = None,
                 weights: str | Path | Sequence[str | Path] = DEFAULT_SEGMENTERS,
                 heads: dict[str, str | Path] | None = None, extra_heads: Sequence[str | Path] = ()) -> None:
        self.config = config or AssessConfig()
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
        self.heads = ImageHeads(self.model.backbone, self.head_paths, extra_heads)
        #: the face / plate head, on this pass's features (the report blurs with its regions)
        self.privacy = PrivacyDetector(backbone=self.model.backbone)
        #: every model file with its SHA-256 (stated in each report)
        self.model_files = [ModelFile(role="segmenter", file=w.name, sha256=file_sha256(w), bytes=w.stat().st_size)
                            for w in self.weights]
        self.model_files += [ModelFile(role=f"head:{t}", file=f.name, sha256=file_sha256(f), bytes=f.stat().st_size)
                             for t, f in self.heads.paths.items()]
        self.model_files.append(ModelFile(role="privacy", file=HEAD_FILE.name, sha256=file_sha256(HEAD_FILE),
                                          bytes=HEAD_FILE.stat().st_size))
        #: the fitted P(part damaged) model that decides per-part review (:mod:`.confidence`); None: the paper's rule
        self.part_confidence = None
        if PART_CONFIDENCE.is_file():
            self.part_confidence = load_part_confidence(PART_CONFIDENCE)
            self.model_files.append(ModelFile(role="part_confidence", file=PART_CONFIDENCE.name,
                                              sha256=file_sha256(PART_CONFIDENCE), bytes=PART_CONFIDENCE.stat().st_size))
        #: the calibrated same-vehicle evidence model (:mod:`.same_vehicle`); None: embedding distance only
        self.same_vehicle = SameVehicleModel.load(SAME_VEHICLE)
        shas = {m.role.removeprefix("head:"): m.sha256 for m in self.model_files}
        if self.same_vehicle is not None and not self.same_vehicle.fits(shas):
            self.same_vehicle = None  # fitted on other heads' outputs: their probabilities mean something else
        if self.same_vehicle is not None:
            self.model_files.append(ModelFile(role="same_vehicle", file=SAME_VEHICLE.name,
                                              sha256=file_sha256(SAME_VEHICLE), bytes=SAME_VEHICLE.stat().st_size))
        #: the networks of the hot path: the torch models, or their ONNX Runtime versions (same
        #: interface); Grad-CAM always uses the torch backbone (it needs gradients)
        self.net = self.model
        if self.engine == "onnx":
            from ..models.export import standalone_files
            from ..models.onnx_runtime import ensure_onnx_models

            onnx = ensure_onnx_models(self.weights, standalone_files(self.head_paths), threads=torch.get_num_threads())
            self.net = onnx.segmenter
            self.heads.replace(onnx.standalone)

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

    def models_summary(self) -> dict[str, str]:
        """Role -> model file names (the HTML header; the hashes are in ``model_files``)."""
        return {"segmenter": ", ".join(w.name for w in self.weights), "backbone": self.model.backbone.variant,
                "vehicle_gate": (self.heads.files["presence"] if self.heads.has("presence")
                                 else "ImageNet vehicle classes (summed softmax) OR part coverage"),
                **{f"head:{t}": f for t, f in self.heads.files.items() if t != "presence"}}

    # ------------------------------------------------------------------ per photo
    def read_photo(self, path: Path) -> DecodedImage | ImageLoadError:
        """Decode one file: the :class:`~carcheck.data.images.DecodedImage` (RGB ``uint8`` array and the
        photo's full size in px, from the one open of the file), or the :class:`ImageLoadError` saying why
        it cannot be used (returned, not raised, so that a decode-ahead thread can hand it over)."""
        try:
            return decode_image(path, max_decoded_pixels=self.config.max_decoded_pixels)
        except ImageLoadError as e:
            return e
        except Exception as e:  # the failure boundary of one file: nothing it raises stops the case
            return ImageLoadError(path, f"could not be read ({type(e).__name__}: {e})")

    def predict(self, image: np.ndarray, gate: bool = True) -> Prediction:
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
            private = self.privacy.regions_from_features(out.features, tuple(x.shape[-2:]))
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
        return Prediction(x, score, p_vehicle, heads, parts, damage, skip, private)

    def damage_map_at(self, image: np.ndarray, longest: int, shape: tuple[int, int]) -> np.ndarray:
        """The damage decoder's softmax ``(D + 1, H, W)`` float32 from a second backbone pass at longer side
        ``longest`` px, area-averaged to ``shape`` = (H, W) (the part map's network resolution): the second
        look's finer pass (``fusion.missed_damage_longest_side``)."""
        x = to_input_tensor(image, longest)
        with inference_context(self.bf16):
            out = self.net.backbone(x)
            logits = self.net.decode(out.features, tuple(x.shape[-2:]), ["damage"])["damage"]
        prob = torch.nn.functional.interpolate(logits.float().softmax(1), size=tuple(shape), mode="area")
        return prob[0].numpy()

    def finer_damage(self, image: np.ndarray, pred: Prediction):
        """The second look's finer pass for :func:`~.photo.photo_detections`: a function returning
        :meth:`damage_map_at` the configured longer side (run only if the second look needs it), or None
        when ``fusion.missed_damage_longest_side`` is off."""
        side = self.config.fusion.missed_damage_longest_side
        return None if side is None else (lambda: self.damage_map_at(image, side, tuple(pred.parts.shape[1:])))

    def _photo_type(self, heads: PhotoHeadOutputs):
        """The photo's :class:`~carcheck.schema.PhotoTypeDecision` from the photo-type head
        (:mod:`.photo_type`), or None when the head is not installed."""
        if "photo_type" not in heads.logits:
            return None
        info = self.heads.info("photo_type")
        aware = None
        if "photo_type_damage_aware" in heads.logits:
            pa = probabilities_from_logits(heads.logits["photo_type_damage_aware"].tolist(),
                                           self.heads.info("photo_type_damage_aware").classes)
            aware = min(1.0, pa.get("exterior_full", 0.0) + pa.get("exterior_closeup", 0.0))
        return decide_photo_type(probabilities_from_logits(heads.logits["photo_type"].tolist(), info.classes),
                                 self.config.photo_type, damage_aware_exterior=aware)

    def _plate(self, report: PhotoReport, image: np.ndarray, pred: Prediction) -> PlateRead | None:
        """Read the licence plate of an assessed exterior photo (:mod:`.plate`) from the stored-resolution
        ``image`` in the privacy head's plate regions; sets ``report.plate`` (masked). None: not read."""
        if not self.config.plate_text or not pred.private_regions:
            return None
        read = read_plates(image, pred.private_regions, image.shape[1] / pred.x.shape[-1])
        if read is not None:
            report.plate = PlateReading(masked=read.masked, confidence=round(read.score, 4))
        return read

    def _image_level(self, report: PhotoReport, heads: PhotoHeadOutputs) -> None:
        """Damage filter, car state, severity and make/model of one assessed photo (:func:`.photo.image_level`)."""
        image_level(report, heads, self.heads, self.config, self.precision)

    # ------------------------------------------------------------------ per case
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
            if self.same_vehicle is not None:
                mm = self.heads.info("make_model").classes if self.heads.has("make_model") else None
                ids = {p.path: photo_identity(p, visuals[p.path].image, visuals[p.path].part_label, self.part_names,
                                              visuals[p.path].heads.embedding,
                                              visuals[p.path].heads.logits.get("make_model"), mm) for p in assessed}
                res = evidence_same_vehicle_check(ids, self.same_vehicle, head.distance)
            else:
                res = same_vehicle_check([p.path for p in assessed],
                                         torch.stack([visuals[p.path].heads.embedding for p in assessed]),
                                         head.distance, float(info.threshold))
            plate, decided = plate_decisions({p.path: visuals[p.path].plate for p in assessed})
            if plate is not None:
                res.consistency.plate = mask_plate(plate)
                apply_plate_evidence(res, decided, mask_plate(plate))
            for p in assessed:
                p.vehicle_match = res.matches.get(p.path)
                if p.plate is not None:
                    p.plate.agrees_with_case = decided.get(p.path)
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
