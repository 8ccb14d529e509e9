"""Dataset statistics (``carcheck dataset stats``): per source, per-class image and instance counts with
CarDD's size buckets (:func:`carcheck.data.check.size_bucket`), over the sources :func:`~.check.discover` finds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from pycocotools import mask as mask_utils

from .check import Track, _no_track, discover, size_bucket
from .coco import CocoSource
from .coco_schema import CocoFormatError
from .folder import FolderFormatError, PairsDataset
from .image_header import image_size
from .images import ImageLoadError, is_image_path
from .yolo import YoloFormatError, YoloSource

__all__ = ["DatasetStats", "dataset_stats"]


@dataclass
class DatasetStats:
    """Per-source statistics: rows of per-class image and instance counts with CarDD size buckets."""

    root: str
    sources: list[dict]

    def to_dict(self) -> dict:
        return {"root": self.root, "sources": self.sources}


def _coco_stats(src: CocoSource, track: Track) -> dict:
    per_class: dict[str, Counter] = defaultdict(Counter)
    img_sets: dict[str, set] = defaultdict(set)
    for im in track(src.images, description=f"stats {src.json_path.name}"):
        for inst in src.instances(im.id):
            try:
                area = float(mask_utils.area(inst.to_rle(im.height, im.width)))
            except CocoFormatError:
                continue
            c = per_class[inst.category]
            c["instances"] += 1
            c[size_bucket(area)] += 1
            img_sets[inst.category].add(im.id)
    rows = [{"class": k, "images": len(img_sets[k]), "instances": v["instances"], "small": v["small"],
             "medium": v["medium"], "large": v["large"]} for k, v in sorted(per_class.items())]
    return {"format": "coco", "source": str(src.json_path), "split": src.split, "images": len(src.images),
            "unannotated_images": sum(1 for im in src.images if not src.annotations_by_image.get(im.id)),
            "classes": rows}


def _yolo_stats(src: YoloSource, track: Track) -> list[dict]:
    out = []
    for name, paths in src.splits.items():
        per_class: dict[int, Counter] = defaultdict(Counter)
        imgs: dict[int, set] = defaultdict(set)
        for p in track(paths, description=f"stats YOLO {name}"):
            try:
                objs = src.objects(p)
                w, h = image_size(p)
            except (YoloFormatError, ImageLoadError):
                continue
            for o in objs:
                area = o.box[2] * w * o.box[3] * h
                c = per_class[o.class_id]
                c["instances"] += 1
                c[size_bucket(area)] += 1
                imgs[o.class_id].add(p)
        rows = [{"class": src.names[k], "images": len(imgs[k]), "instances": v["instances"], "small": v["small"],
                 "medium": v["medium"], "large": v["large"], "area": "box"} for k, v in sorted(per_class.items())]
        out.append({"format": "yolo", "source": str(src.yaml_path), "split": name, "images": len(paths), "classes": rows})
    return out


def dataset_stats(root: str | Path, track: Track = _no_track) -> DatasetStats:
    """Per-class image and instance counts and CarDD small / medium / large counts for every
    source under ``root``. Areas are mask areas in px² (box areas for YOLO detection labels).

    Raises:
        FileNotFoundError: if ``root`` does not exist.
    """
    root = Path(root)
    sources, _ = discover(root)
    out = []
    for kind, src in sources:
        if kind == "coco":
            out.append(_coco_stats(src, track))
        elif kind == "yolo":
            out.extend(_yolo_stats(src, track))
        elif kind == "folder":
            rows = [{"class": c.name, "images": sum(1 for p in c.rglob("*") if is_image_path(p))}
                    for c in sorted(x for x in src.iterdir() if x.is_dir())]
            out.append({"format": "folder", "source": str(src), "split": "all",
                        "images": sum(r["images"] for r in rows), "classes": rows})
        elif kind == "pairs":
            try:
                ds = PairsDataset(src)
            except FolderFormatError:
                continue
            pos = sum(s for _, _, s in ds.pairs)
            out.append({"format": "pairs", "source": str(src), "split": "all", "images": len({p for a, b, _ in ds.pairs for p in (a, b)}),
                        "classes": [{"class": "same", "pairs": pos}, {"class": "different", "pairs": len(ds.pairs) - pos}]})
    return DatasetStats(str(root), out)
