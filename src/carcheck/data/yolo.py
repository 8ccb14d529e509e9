"""YOLO detection / segmentation reader (Ultralytics ``data.yaml`` layout).

Label files hold one object per line, coordinates normalised to [0, 1]:
detection ``cls cx cy w h``; segmentation ``cls x1 y1 x2 y2 ...`` (polygon).
The label of ``.../images/<rest>/<name>.jpg`` is ``.../labels/<rest>/<name>.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from .images import display_name, is_image_path, load_image

__all__ = ["YoloFormatError", "YoloObject", "YoloSource", "YoloDataset", "find_yolo_configs", "coco_category_name",
           "yolo_split_to_coco", "coco_file_for_yolo", "yolo_yaml_for", "annotation_file"]


class YoloFormatError(ValueError):
    """A YOLO config or label file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class YoloObject:
    """One labelled object: class id, box ``(cx, cy, w, h)`` normalised, optional polygon ``(K, 2)`` normalised."""

    class_id: int
    box: tuple[float, float, float, float]
    polygon: np.ndarray | None = None


def find_yolo_configs(root: Path) -> list[Path]:
    """YAML files under ``root`` that declare ``names``, and unreadable YAML files beside an
    ``images/`` folder (so that :class:`YoloSource` names why they cannot be read)."""
    out = []
    for p in sorted(list(Path(root).rglob("*.yaml")) + list(Path(root).rglob("*.yml"))):
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError, RecursionError):
            if (p.parent / "images").is_dir():
                out.append(p)
            continue
        if isinstance(cfg, dict) and "names" in cfg:
            out.append(p)
    return out


def label_path_for(image_path: Path) -> Path:
    """``.../images/x/y.jpg`` -> ``.../labels/x/y.txt`` (last ``images`` path component; without
    one, ``y.txt`` beside the image)."""
    parts = list(image_path.parts)
    if "images" not in parts:  # no images/ folder in the path: the label sits beside the image
        return image_path.with_suffix(".txt")
    idx = max(i for i, part in enumerate(parts) if part == "images")
    parts[idx] = "labels"
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, num_classes: int) -> list[YoloObject]:
    """Parse one label file; a missing file means no objects.

    Raises:
        YoloFormatError: naming the file and line for bad numbers, unknown class ids or
            coordinates outside [0, 1].
    """
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise YoloFormatError(f"{display_name(path)}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise YoloFormatError(f"{display_name(path)}: cannot be read ({e.strerror or e})") from None
    objs = []
    for ln, line in enumerate(text.splitlines(), 1):
        vals = line.split()
        if not vals:
            continue
        try:
            cls = int(vals[0])
            nums = [float(v) for v in vals[1:]]
        except ValueError:
            raise YoloFormatError(f"{display_name(path)}:{ln}: not numbers: {line!r:.80}") from None
        if not all(np.isfinite(nums)):
            raise YoloFormatError(f"{display_name(path)}:{ln}: a coordinate is not a finite number")
        if not 0 <= cls < num_classes:
            raise YoloFormatError(f"{path}:{ln}: class id {cls} outside 0..{num_classes - 1}")
        if any(v < -1e-3 or v > 1 + 1e-3 for v in nums):
            raise YoloFormatError(f"{path}:{ln}: coordinates outside [0, 1]")
        if len(nums) == 4:
            objs.append(YoloObject(cls, tuple(nums)))
        elif len(nums) >= 6 and len(nums) % 2 == 0:
            poly = np.asarray(nums, dtype=np.float32).reshape(-1, 2)
            (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
            objs.append(YoloObject(cls, ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), poly))
        else:
            raise YoloFormatError(f"{path}:{ln}: expected 4 box values or an even number >= 6 of polygon values")
    return objs


class YoloSource:
    """A YOLO dataset described by a ``data.yaml``.

    Split folders are the yaml's ``train`` / ``val`` / ``test`` entries, relative to its
    ``path`` (itself relative to the yaml). When none of them exists but an ``images/``
    folder sits beside the yaml, all its images form one split ``all`` and
    :attr:`warnings` says so.

    Raises:
        YoloFormatError: if the yaml is unreadable or has no ``names``.
    """

    def __init__(self, yaml_path: str | Path) -> None:
        self.yaml_path = Path(yaml_path)
        where = display_name(self.yaml_path)
        try:
            cfg = yaml.safe_load(self.yaml_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise YoloFormatError(f"{where}: unreadable YAML ({display_name(str(e))[:200]})") from None
        except RecursionError:
            raise YoloFormatError(f"{where}: YAML nested too deeply to read") from None
        if not isinstance(cfg, dict) or "names" not in cfg:
            raise YoloFormatError(f"{where}: no 'names' in the YOLO config")
        names = cfg["names"]
        if isinstance(names, dict) and all(type(k) is int for k in names):
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) and not isinstance(n, bool)
                                                               for n in names):
            raise YoloFormatError(f"{where}: 'names' must be a non-empty list of class names or a mapping "
                                  "from class ids (integers) to names")
        self.names: list[str] = [str(n) for n in names]
        if not isinstance(cfg.get("path", "."), (str, int, float)):
            raise YoloFormatError(f"{where}: 'path' must be a folder path")
        base = (self.yaml_path.parent / str(cfg.get("path", "."))).resolve()
        self.warnings: list[str] = []
        self.splits: dict[str, list[Path]] = {}
        for split in ("train", "val", "test"):
            if split in cfg and cfg[split]:
                value = cfg[split]
                folders = [value] if isinstance(value, str) else value
                if not isinstance(folders, list) or not all(isinstance(x, str) and x for x in folders):
                    raise YoloFormatError(f"{where}: split {split!r} must be a folder path or a list of folder paths")
                found = []
                for x in folders:  # Ultralytics allows a list of folders per split
                    d = base / x
                    if d.is_dir():
                        found += sorted(p for p in d.rglob("*") if is_image_path(p))
                    else:
                        self.warnings.append(f"{where}: split {split!r} folder {display_name(d)} does not exist")
                if found:
                    self.splits[split] = found
        if not self.splits and (self.yaml_path.parent / "images").is_dir():
            self.splits["all"] = sorted(p for p in (self.yaml_path.parent / "images").rglob("*") if is_image_path(p))
            self.warnings.append(f"{self.yaml_path}: using {self.yaml_path.parent / 'images'} as one split 'all'")

    def objects(self, image_path: Path) -> list[YoloObject]:
        """Objects labelled on ``image_path`` (empty when it has no label file)."""
        return parse_label_file(label_path_for(image_path), len(self.names))


class YoloDataset(Dataset):
    """Torch dataset over one split of a YOLO source.

    Items are dicts: ``image`` (``uint8`` ``(3, H, W)``), ``boxes`` (``float32`` ``(N, 4)``,
    xyxy in pixels), ``labels`` (``int64`` ``(N,)``, YOLO class ids), ``path`` (str).

    Raises:
        KeyError: for an unknown split; ImageLoadError / YoloFormatError from items.
    """

    def __init__(self, yaml_path: str | Path, split: str | None = None, transform: Callable | None = None) -> None:
        self.source = YoloSource(yaml_path)
        split = split or next(iter(self.source.splits))
        self.paths = self.source.splits[split]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        image = load_image(path)
        h, w = image.shape[:2]
        objs = self.source.objects(path)
        boxes = torch.tensor([[(o.box[0] - o.box[2] / 2) * w, (o.box[1] - o.box[3] / 2) * h,
                               (o.box[0] + o.box[2] / 2) * w, (o.box[1] + o.box[3] / 2) * h] for o in objs],
                             dtype=torch.float32).reshape(-1, 4)
        item = {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "boxes": boxes,
                "labels": torch.tensor([o.class_id for o in objs], dtype=torch.int64), "path": str(path)}
        if self.transform is not None:
            item = self.transform(item)
        return item


def coco_category_name(name: str) -> str:
    """A YOLO class name as a taxonomy class name: lower case, spaces and dashes as ``_``
    (CarDD's ``glass shatter`` -> ``glass_shatter``)."""
    return "_".join(str(name).strip().lower().replace("-", " ").split())


def yolo_split_to_coco(source: YoloSource, split: str) -> dict:
    """One split of a YOLO segmentation source as a COCO instances dict.

    Polygons are denormalised to pixels of each image's real size (read from the header);
    every image entry carries its absolute ``path``, so the dict can be written anywhere.
    A box-only object becomes a 4-corner polygon. Category ids are YOLO class ids + 1 and names
    pass through :func:`coco_category_name`.

    Raises:
        KeyError: unknown split (the message lists the available ones).
        YoloFormatError: a malformed label file (file and line named).
        ImageLoadError: an image whose header cannot be read.
    """
    from .image_header import image_size

    if split not in source.splits:
        raise KeyError(f"{display_name(source.yaml_path)}: no split {split!r} (has {sorted(source.splits)})")
    images, anns = [], []
    for img_id, path in enumerate(source.splits[split], 1):
        w, h = image_size(path)
        images.append({"id": img_id, "file_name": path.name, "path": str(path.resolve()), "width": w, "height": h})
        for o in source.objects(path):
            if o.polygon is not None:
                poly = (o.polygon * np.array([w, h], dtype=np.float32)).reshape(-1)
            else:
                cx, cy, bw, bh = o.box
                x0, y0, x1, y1 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
                poly = np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float32)
            xs, ys = poly[0::2], poly[1::2]
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]
            # shoelace area of the polygon (px²); pycocotools recomputes mask areas itself
            area = float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": o.class_id + 1,
                         "segmentation": [[round(float(v), 2) for v in poly]], "bbox": bbox, "area": area,
                         "iscrowd": 0})
    cats = [{"id": i + 1, "name": coco_category_name(n)} for i, n in enumerate(source.names)]
    return {"images": images, "annotations": anns, "categories": cats,
            "info": {"description": f"{display_name(source.yaml_path)} split {split}, converted from YOLO-seg by carcheck"}}


def coco_file_for_yolo(yaml_path: str | Path, split: str, cache_dir: str | Path | None = None) -> Path:
    """Write (once) and return a COCO JSON of one split of a YOLO-seg dataset.

    The file lives in ``cache_dir`` (default ``$XDG_CACHE_HOME/carcheck/yolo_coco``, i.e.
    ``~/.cache/carcheck/yolo_coco``), named by a hash of the yaml path, the split and the label
    files' names, sizes and modification times, so an edited dataset is converted again. Written
    atomically (temporary file + rename). ``split`` accepts ``valid`` for the yaml's ``val``.

    Raises:
        KeyError / YoloFormatError / ImageLoadError: as :func:`yolo_split_to_coco`.
    """
    import hashlib
    import json
    import os

    source = YoloSource(yaml_path)
    split = "val" if split == "valid" else split
    if split not in source.splits:
        raise KeyError(f"{display_name(source.yaml_path)}: no split {split!r} (has {sorted(source.splits)})")
    h = hashlib.sha256(f"{Path(yaml_path).resolve()}|{split}".encode())
    for p in source.splits[split]:
        lp = label_path_for(p)
        st = lp.stat() if lp.exists() else None
        h.update(f"{p.name}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}".encode())
    base = Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "carcheck" / "yolo_coco"
    out = base / f"instances_{split}_{h.hexdigest()[:16]}.json"
    if not out.exists():
        base.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(yolo_split_to_coco(source, split)), encoding="utf-8")
        os.replace(tmp, out)
    return out


def yolo_yaml_for(path: str | Path) -> Path | None:
    """The YOLO ``data.yaml`` that ``path`` names: the yaml itself, or ``data.yaml`` inside a
    folder; None when ``path`` is neither (e.g. a COCO JSON)."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".yaml", ".yml"):
        return p
    if p.is_dir() and (p / "data.yaml").is_file():
        return p / "data.yaml"
    return None


def annotation_file(spec: str, default_split: str) -> Path:
    """A COCO annotation file for ``spec``: a COCO JSON as given, or ``YOLO_ROOT[@SPLIT]`` (a YOLO
    folder holding ``data.yaml``, or the yaml) converted by :func:`coco_file_for_yolo`, split
    ``default_split`` unless ``@SPLIT`` names one.

    Raises:
        FileNotFoundError: ``spec`` is neither an existing file nor a YOLO folder.
        KeyError / YoloFormatError / ImageLoadError: as :func:`coco_file_for_yolo`.
    """
    path, _, split = spec.partition("@") if "@" in spec and not Path(spec).exists() else (spec, "", "")
    yaml_path = yolo_yaml_for(path)
    if yaml_path is not None:
        return coco_file_for_yolo(yaml_path, split or default_split)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{display_name(path)}: no such annotation file or YOLO folder (with data.yaml)")
    return Path(path)
