"""Image-level heads in the assessment: presence gate, damage filter, severity, car state,
make/model and the same-vehicle embedding, read from the photo's one backbone pass; a head with
its own fine-tuned backbone (:class:`~carcheck.models.classifier.StandaloneNet`, the shipped
verification and make/model models) runs on the photo itself.

Which heads run is decided by which files are installed (:data:`~carcheck.models.classifier.
SHIPPED_CLASSIFIERS` plus any extra head files given), so a fleet that trains a SOCAR-style
dirt head only drops its file in and the report's car-state section shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..models.backbone import BackboneOutput, EfficientNetLiteBackbone
from ..models.classifier import SHIPPED_CLASSIFIERS, HeadInfo, ImageHead, StandaloneNet, load_head
from ..schema import ClassScore, HeadResult

__all__ = ["ImageHeads", "PhotoHeadOutputs", "head_result"]

#: Tasks with a role of their own elsewhere in the report.
_SPECIAL = ("presence", "make_model", "make_model_ood", "verification", "photo_type", "photo_type_damage_aware")


def _own_backbone(head) -> bool:
    """Whether a head runs on the photo itself (a StandaloneNet, or an engine's replacement of one
    marked ``own_backbone``, e.g. :class:`~carcheck.models.onnx_runtime.OnnxStandalone`)."""
    return isinstance(head, StandaloneNet) or getattr(head, "own_backbone", False)


@dataclass
class PhotoHeadOutputs:
    """Raw outputs of every loaded head for one photo: task -> logits ``(C,)`` / embedding ``(dim,)``."""

    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    embedding: torch.Tensor | None = None


def head_result(task: str, logits: torch.Tensor, info: HeadInfo, k: int = 3) -> HeadResult:
    """Top-k classes of one head. ``logits (C,)`` float.

    The head's max logit is reported as ``ood_score``; its stored OOD threshold is enforced
    (``out_of_scope``, no label) only when the head file says ``ood.enforce``: a threshold that
    keeps 95% of validation photos would otherwise drop 5% of good photos, and for the damage and
    severity heads the max logit barely separates photos without a vehicle (bench/accuracy/classifiers.py).
    Out-of-scope photos are caught by the presence head and the make/model OOD head instead."""
    p = logits.float().softmax(0)
    top = p.topk(min(k, len(p)))
    scores = [ClassScore(label=info.classes[int(i)], probability=round(float(v), 4)) for v, i in zip(top.values, top.indices)]
    mls = float(logits.max())
    thr = info.ood.get("threshold") if info.ood else None
    oos = thr is not None and info.ood.get("enforce", False) and mls < thr
    return HeadResult(task=task, label=None if oos else scores[0].label,
                      probability=None if oos else scores[0].probability, top=scores, out_of_scope=oos,
                      ood_score=round(mls, 4))


class ImageHeads:
    """The installed image-level heads, run on a shared :class:`BackboneOutput`.

    Args:
        backbone: the shared backbone the heads read (kept for Grad-CAM).
        paths: task -> head file; default the shipped files that exist.
        extra: more head files (any task; classifiers appear in the car-state section).

    Raises:
        FileNotFoundError / ValueError: an explicitly given file is missing or not a head file.
    """

    def __init__(self, backbone: EfficientNetLiteBackbone, paths: dict[str, Path] | None = None,
                 extra: Sequence[str | Path] = ()) -> None:
        files = {t: Path(p) for t, p in (paths if paths is not None else SHIPPED_CLASSIFIERS).items()
                 if paths is not None or Path(p).is_file()}
        self.backbone = backbone
        self.heads: dict[str, tuple[ImageHead | StandaloneNet, HeadInfo]] = {}
        self.files: dict[str, str] = {}  # task -> file name
        self.paths: dict[str, Path] = {}  # task -> file
        for task, p in files.items():
            self.heads[task] = load_head(p)
            self.files[task], self.paths[task] = p.name, p
        for p in extra:
            head, info = load_head(p)
            self.heads[info.task] = (head, info)
            self.files[info.task], self.paths[info.task] = Path(p).name, Path(p)

    def has(self, task: str) -> bool:
        return task in self.heads

    def info(self, task: str) -> HeadInfo:
        return self.heads[task][1]

    def get(self, task: str) -> tuple[ImageHead | StandaloneNet, HeadInfo]:
        """The loaded head and its info. Raises KeyError when the task has no installed head."""
        return self.heads[task]

    def replace(self, models: dict[str, object]) -> None:
        """Swap loaded heads for another engine's version of the same model, keeping each head's
        info: task -> model with the replaced head's call signature (e.g. the ``standalone`` of
        :func:`~carcheck.models.onnx_runtime.load_onnx_models`; mark models that run on the photo
        with ``own_backbone = True``).

        Raises:
            KeyError: a task without an installed head.
        """
        for task, model in models.items():
            if task not in self.heads:
                raise KeyError(f"no installed {task!r} head to replace (installed: {sorted(self.heads)})")
            self.heads[task] = (model, self.heads[task][1])

    def state_tasks(self) -> list[str]:
        """Classifier tasks shown in the car-state section."""
        return [t for t, (_, i) in self.heads.items() if i.kind == "classifier" and t not in _SPECIAL]

    @torch.no_grad()
    def run(self, out: BackboneOutput) -> PhotoHeadOutputs:
        """Every head on the shared pass, from one photo's backbone output (batch of 1, run with
        ``with_pooled=True``); models with their own backbone are left to :meth:`run_standalone`."""
        res = PhotoHeadOutputs()
        for task, (head, info) in self.heads.items():
            if not _own_backbone(head):
                self._store(res, task, info, head(out)[0].float())
        return res

    @torch.no_grad()
    def run_standalone(self, x: torch.Tensor, res: PhotoHeadOutputs) -> PhotoHeadOutputs:
        """The heads with their own backbone on the photo ``x (1, 3, H, W)`` float in [0, 1],
        added to ``res`` (the assessment runs them only on photos that pass the presence gate)."""
        for task, (head, info) in self.heads.items():
            if _own_backbone(head):
                self._store(res, task, info, head(x)[0].float())
        return res

    @staticmethod
    def _store(res: PhotoHeadOutputs, task: str, info: HeadInfo, y: torch.Tensor) -> None:
        if info.kind == "embedding":
            res.embedding = y
        else:
            res.logits[task] = y

    def probability(self, outputs: PhotoHeadOutputs, task: str, label: str) -> float | None:
        """P(label) of a classifier head, or None when the head is not installed."""
        if task not in outputs.logits:
            return None
        return float(outputs.logits[task].softmax(0)[self.info(task).classes.index(label)])
