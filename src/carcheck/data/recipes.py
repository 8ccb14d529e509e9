"""Recipes: the image-level label tables carcheck's shipped classifiers were trained on, built
from the ``../shared/data`` layout (see each set's PROVENANCE.md).

Each recipe returns :class:`~carcheck.data.labels.LabelRow` rows with a fixed split: a set's own
split where it has one, else a seeded stratified split (:func:`~carcheck.data.labels.assign_splits`,
seed 0, 70/15/15). ``carcheck dataset recipe NAME`` writes them as a label CSV.

Judgement calls (stated so they can be argued with):

- presence: coco128 photos with ``has_vehicle == 0`` are "no_vehicle" (motorcycles, trains and
  planes included: a motorbike is not a car photo); photos whose largest car/bus/truck box
  covers >= 5% of the image are "vehicle"; photos with only smaller background vehicles are
  ambiguous and left out of training and testing.
- damaged: lplenka's 70 photos are all inside lensor_severity (PROVENANCE), so only lensor
  represents them. Every lensor and vds photo counts as damaged, every car_parts (DSMLR) and
  Stanford Cars photo as undamaged (neither set was built to show damage).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .folder import FolderFormatError
from .images import is_image_path
from .labels import LabelRow, assign_splits, rows_from_class_folders

__all__ = ["RECIPES", "build_recipe", "make_of"]

from .taxonomy import make_of  # noqa: E402  (re-exported: it lived here before; recipes are training data only)

#: Minimum largest-vehicle box area (fraction of the image) for a coco128 photo to count as "vehicle".
PRESENCE_MIN_BOX_AREA = 0.05


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FolderFormatError(f"{folder}: expected folder is missing (see the set's PROVENANCE.md)")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))


def _car_parts(root: Path, label: str) -> list[LabelRow]:
    """DSMLR photos: the testset stays test, the trainingset is split later."""
    cp = root / "car_parts"
    return ([LabelRow(p, label, "car_parts", None) for p in _images(cp / "trainingset" / "JPEGImages")]
            + [LabelRow(p, label, "car_parts", "test") for p in _images(cp / "testset" / "JPEGImages")])


def _car_photos(root: Path, label: str) -> list[LabelRow]:
    """Car photos of car_parts, lensor, vds and Stanford Cars, with each set's own split kept."""
    return _car_parts(root, label) + _stanford(root, label) + _lensor(root, label) + _vds(root, label)


def _lensor(root: Path, label: str) -> list[LabelRow]:
    base = root / "car_damage" / "lensor_severity" / "images"
    return [LabelRow(p, label, "lensor_severity", s) for s in ("train", "val", "test") for p in _images(base / s)]


def _vds(root: Path, label: str) -> list[LabelRow]:
    return [replace(r, label=label, source="vds_damage_severity")
            for r in rows_from_class_folders(root / "car_state" / "vds_damage_severity")]


def _stanford(root: Path, label: str | None = None) -> list[LabelRow]:
    rows = rows_from_class_folders(root / "car_models" / "stanford_cars_subset32", source="stanford_cars")
    return [replace(r, label=label) for r in rows] if label else rows


def presence(root: Path) -> list[LabelRow]:
    """vehicle / no_vehicle (see the module doc for the coco128 rule)."""
    coco = root / "vehicle_presence" / "coco128"
    rows = []
    with open(coco / "labels.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            p = coco / "images" / r["file"]
            if r["has_vehicle"] == "0":
                rows.append(LabelRow(p, "no_vehicle", "coco128"))
            elif float(r["max_vehicle_box_area"]) >= PRESENCE_MIN_BOX_AREA:
                rows.append(LabelRow(p, "vehicle", "coco128"))
    return assign_splits(rows + _car_photos(root, "vehicle"))


def damaged(root: Path) -> list[LabelRow]:
    """damaged / undamaged; the source is kept for per-source accuracy."""
    rows = _car_parts(root, "undamaged") + _stanford(root, "undamaged") + _lensor(root, "damaged") + _vds(root, "damaged")
    return assign_splits(rows)


def severity(root: Path) -> list[LabelRow]:
    """minor / moderate / severe from car_state/vds_damage_severity."""
    return assign_splits(rows_from_class_folders(root / "car_state" / "vds_damage_severity"))


def make_model(root: Path) -> list[LabelRow]:
    """32 Stanford Cars classes (``Make_Model_Body_Year`` folder names)."""
    return assign_splits(_stanford(root))


#: Where ``scripts/build_stanford196.py`` writes the 196-class set under a data root.
STANFORD196 = Path("car_models") / "stanford196"


def make_model196(root: Path) -> list[LabelRow]:
    """All 196 Stanford Cars classes, built by ``scripts/build_stanford196.py`` into
    ``root/car_models/stanford196`` (the shared set's held-out photos are not in it).

    Split 80/10/10 per class, seed 0; photos within 6 bits of dHash (``groups.csv``) share a group,
    so near-duplicates never straddle train and test.

    Raises:
        FolderFormatError: the built folder or its ``groups.csv`` is missing.
    """
    base = root / STANFORD196
    gfile = base / "groups.csv"
    if not gfile.is_file():
        raise FolderFormatError(f"{gfile}: missing; build the set with scripts/build_stanford196.py")
    with open(gfile, newline="", encoding="utf-8") as f:
        groups = {r["file"]: r["group"] for r in csv.DictReader(f)}
    rows = [LabelRow(base / rel, rel.split("/")[0], "stanford196", None, g) for rel, g in sorted(groups.items())]
    return assign_splits(rows, (0.8, 0.1, 0.1), strata=("label",))


def part_crops(root: Path) -> list[LabelRow]:
    """Interior part crops (console, dashboard, gear_lever, steering_wheel); crops of one source
    photo share a group, so a photo never straddles splits."""
    base = root / "car_part_crops" / "compcars_style_interior_voc"
    rows = []
    with open(base / "crops.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append(LabelRow(base / r["crop"], r["part_class"], "compcars_style_interior_voc", None,
                                 r["source_image"]))
    return assign_splits(rows, strata=("source",))


def verification(root: Path) -> list[LabelRow]:
    """vn_traffic_reid_2cam crops; label = group = vehicle identity, split by identity within
    each vehicle type (source = vehicle type)."""
    base = root / "verification" / "vn_traffic_reid_2cam"
    rows = []
    with open(base / "identities.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append(LabelRow(base / "images" / r["file"], r["identity"], r["vehicle_type"], None, r["identity"]))
    return assign_splits(rows, strata=("source",))


def unknown_vehicles(root: Path) -> list[LabelRow]:
    """Photos outside the make/model classifier's 32 Stanford models, for its out-of-scope rule:
    car photos of car_parts (Thai street cars), lensor and vds (damage close-ups, crash scenes) and
    coco128 photos without a vehicle; label ``unknown``, each set's split kept or assigned."""
    rows = [LabelRow(r.path, "unknown", r.source, r.split) for r in presence(root)
            if r.source != "stanford_cars" and (r.label == "no_vehicle" or r.source != "coco128")]
    return rows


RECIPES: dict[str, Callable[[Path], list[LabelRow]]] = {
    "presence": presence, "damaged": damaged, "severity": severity, "make_model": make_model,
    "make_model196": make_model196,
    "part_crops": part_crops, "verification": verification, "unknown_vehicles": unknown_vehicles,
}


def build_recipe(name: str, root: str | Path) -> list[LabelRow]:
    """Rows of recipe ``name`` over the data root (the folder holding ``car_parts``, ``car_damage``...).

    Raises:
        KeyError: unknown recipe (lists the known ones).
        FolderFormatError: a folder the recipe needs is missing.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return RECIPES[name](Path(root))
