"""Class taxonomies and the declared mappings between them.

Everything carcheck knows about class names lives here, as data. A :class:`Taxonomy`
is an ordered tuple of class names (without background); a :class:`TaxonomyMapping`
is a declared table from every class of a source taxonomy to a class of a target
taxonomy, or to ``None`` (explicitly dropped). Mappings are checked for completeness
when they are built, so a class can never be silently lost.

Semantic masks use index 0 for background and ``i + 1`` for ``taxonomy.classes[i]``.

Sources
-------
* DSMLR Car Parts V2 (Pasupa et al., Complex & Intelligent Systems 2021): 18 parts,
  left/right from the car's own point of view.
* Reduced 13-part taxonomy of the end-to-end damage assessment system (Ma et al.,
  IEEE T-ITS 2023, Table III): the 18 DSMLR parts with left and right merged.
  carcheck could not consult the table offline; the merge below is our reading of
  "reduced" (18 parts, 5 left/right pairs merged = 13) and is stated here so that it can
  be corrected in one place.
* lplenka COCO car damage: 5 parts (headlamp, rear_bumper, door, hood, front_bumper).
* CarDD (Wang et al., IEEE T-ITS 2023): 6 damage types.
* lensor_severity: damage type x severity (8 classes used).
* Damage merge strategies Original / Reduced / Categorical / Binary (Ma et al., Table III),
  expressed over CarDD's 6 types.
* SOCAR car state, 14 classes (SOCAR paper, Table 1). Class names are carcheck's
  snake_case rendering; the trainer accepts any folder names, so a dataset whose folders
  differ only needs a mapping here.
* CompCars part names (Yang et al., CVPR 2015): 8 exterior/interior close-up parts.

Which damage type can occur on which part (a flat tyre only on a wheel) is declared over these
taxonomies in :mod:`carcheck.data.plausibility`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "Taxonomy",
    "TaxonomyMapping",
    "TaxonomyError",
    "IGNORE",
    "TAXONOMIES",
    "MAPPINGS",
    "get_taxonomy",
    "get_mapping",
    "DAMAGE_PRIORITY",
    "make_of",
]


class TaxonomyError(ValueError):
    """Raised for unknown taxonomies, unknown classes or incomplete mappings."""


#: Mapping target meaning "labelled, but not as any target class": its pixels become the ignore label
#: (255) in semantic masks, so a loss neither rewards nor punishes them (e.g. lensor's ``broken``, which is
#: a crack, a shattered glass, a broken lamp or a crushed panel; background would teach the model that
#: crushed panels are clean).
IGNORE = "<ignore>"


@dataclass(frozen=True)
class Taxonomy:
    """An ordered set of class names.

    Attributes:
        name: registry key, e.g. ``"dsmlr_parts"``.
        classes: class names in label order, background excluded. Semantic-mask
            value ``i + 1`` means ``classes[i]``; 0 is background.
        source: where the list comes from (paper, table, dataset).
        left_right_pairs: pairs of classes that swap under a horizontal flip
            (only for taxonomies whose left/right are the object's own sides).
    """

    name: str
    classes: tuple[str, ...]
    source: str
    left_right_pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise TaxonomyError(f"taxonomy {self.name!r} has duplicate class names")
        for a, b in self.left_right_pairs:
            if a not in self.classes or b not in self.classes:
                raise TaxonomyError(f"taxonomy {self.name!r}: flip pair ({a}, {b}) names an unknown class")

    @property
    def num_classes(self) -> int:
        """Number of classes without background."""
        return len(self.classes)

    @property
    def names_with_background(self) -> tuple[str, ...]:
        """``("background", *classes)``: the label names of a semantic mask."""
        return ("background", *self.classes)

    def index(self, name: str) -> int:
        """Zero-based index of ``name`` (background excluded).

        Raises:
            TaxonomyError: if ``name`` is not a class of this taxonomy.
        """
        try:
            return self.classes.index(name)
        except ValueError:
            raise TaxonomyError(f"{name!r} is not a class of taxonomy {self.name!r}") from None

    def flip_permutation(self) -> list[int]:
        """Label permutation for a horizontal flip of a semantic mask.

        Returns:
            list ``p`` of length ``num_classes + 1`` (background at 0) such that a
            flipped mask ``m`` must be relabelled ``p[m]``. Identity when the taxonomy
            has no left/right pairs.
        """
        perm = list(range(self.num_classes + 1))
        for a, b in self.left_right_pairs:
            ia, ib = self.index(a) + 1, self.index(b) + 1
            perm[ia], perm[ib] = ib, ia
        return perm


@dataclass(frozen=True)
class TaxonomyMapping:
    """A declared, complete table from one taxonomy to another.

    Attributes:
        source: the taxonomy mapped from.
        target: the taxonomy mapped to.
        table: every source class -> a target class name, ``None`` when the class is
            deliberately dropped (its pixels become background, its instances are dropped), or
            :data:`IGNORE` (its pixels become the ignore label 255, its instances are dropped).

    Raises:
        TaxonomyError: at construction, when a source class is missing from ``table``,
            ``table`` names a class the source lacks, or a target name is unknown.
    """

    source: Taxonomy
    target: Taxonomy
    table: Mapping[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in self.source.classes if c not in self.table]
        extra = [c for c in self.table if c not in self.source.classes]
        bad_targets = [t for t in self.table.values()
                       if t is not None and t != IGNORE and t not in self.target.classes]
        if missing or extra or bad_targets:
            raise TaxonomyError(
                f"mapping {self.source.name}->{self.target.name} is incomplete or wrong: "
                f"unmapped={missing} unknown_source={extra} unknown_target={bad_targets}"
            )
        object.__setattr__(self, "table", MappingProxyType(dict(self.table)))

    @property
    def key(self) -> tuple[str, str]:
        return (self.source.name, self.target.name)

    def map_name(self, name: str) -> str | None:
        """Target class for source class ``name``; ``None`` if it is dropped.

        Raises:
            TaxonomyError: if ``name`` is not a source class.
        """
        if name not in self.table:
            raise TaxonomyError(f"{name!r} is not a class of taxonomy {self.source.name!r}")
        return self.table[name]

    def lut(self) -> list[int]:
        """Lookup table for semantic masks: ``new_mask = lut[old_mask]``.

        Returns:
            list of length ``source.num_classes + 1``; background (0) and dropped classes map to 0,
            :data:`IGNORE` classes to 255.
        """
        out = [0]
        for c in self.source.classes:
            t = self.table[c]
            out.append(0 if t is None else 255 if t == IGNORE else self.target.index(t) + 1)
        return out


# --------------------------------------------------------------------------- parts
DSMLR_PARTS = Taxonomy(
    "dsmlr_parts",
    (
        "back_bumper", "back_glass", "back_left_door", "back_left_light", "back_right_door",
        "back_right_light", "front_bumper", "front_glass", "front_left_door", "front_left_light",
        "front_right_door", "front_right_light", "hood", "left_mirror", "right_mirror",
        "tailgate", "trunk", "wheel",
    ),
    source="DSMLR Car Parts V2 (Pasupa et al. 2021); left/right are the car's own sides",
    left_right_pairs=(
        ("back_left_door", "back_right_door"),
        ("back_left_light", "back_right_light"),
        ("front_left_door", "front_right_door"),
        ("front_left_light", "front_right_light"),
        ("left_mirror", "right_mirror"),
    ),
)

REDUCED_PARTS = Taxonomy(
    "reduced_parts",
    (
        "back_bumper", "back_glass", "back_door", "back_light", "front_bumper", "front_glass",
        "front_door", "front_light", "hood", "mirror", "tailgate", "trunk", "wheel",
    ),
    source="End-to-end damage assessment system (Ma et al. 2023), Table III 'Reduced' parts (carcheck's reading)",
)

LPLENKA_PARTS = Taxonomy(
    "lplenka_parts",
    ("headlamp", "rear_bumper", "door", "hood", "front_bumper"),
    source="lplenka COCO car damage; 'headlamp' covers head and tail lamps",
)

COMPCARS_PARTS = Taxonomy(
    "compcars_parts",
    ("headlight", "taillight", "fog_light", "air_intake", "console", "steering_wheel", "dashboard", "gear_lever"),
    source="CompCars (Yang et al., CVPR 2015), car part close-ups, 8 part names",
)

# -------------------------------------------------------------------------- damage
CARDD_DAMAGE = Taxonomy(
    "cardd_damage",
    ("dent", "scratch", "crack", "glass_shatter", "lamp_broken", "tire_flat"),
    source="CarDD (Wang et al., IEEE T-ITS 2023), 6 damage categories",
)

LENSOR_DAMAGE = Taxonomy(
    "lensor_damage",
    (
        "minor-dent", "minor-scratch", "moderate-broken", "moderate-dent", "moderate-scratch",
        "severe-broken", "severe-dent", "severe-scratch",
    ),
    source="lensor_severity Roboflow export: damage type x severity",
)

LPLENKA_DAMAGE = Taxonomy("lplenka_damage", ("damage",), source="lplenka COCO car damage: one generic class")

DAMAGE_TYPE = Taxonomy(
    "damage_type",
    ("dent", "scratch", "broken"),
    source="carcheck training taxonomy for lensor_severity: severity merged; broken = crack/glass/lamp",
)

DAMAGE_BINARY = Taxonomy("damage_binary", ("damage",), source="Binary merge strategy (Ma et al., Table III)")

# Ma et al. Table III merge strategies, over CarDD's 6 types.
DAMAGE_ORIGINAL = Taxonomy(
    "damage_original", CARDD_DAMAGE.classes, source="Original merge strategy (Ma et al., Table III): no merge"
)
DAMAGE_REDUCED = Taxonomy(
    "damage_reduced",
    ("dent", "scratch", "crack", "broken_glass_or_lamp", "tire_flat"),
    source="Reduced merge strategy (Ma et al., Table III; carcheck's reading): glass shatter + broken lamp merged",
)
DAMAGE_CATEGORICAL = Taxonomy(
    "damage_categorical",
    ("deformation", "surface", "breakage"),
    source="Categorical merge strategy (Ma et al., Table III; carcheck's reading): by repair kind",
)

# CarDD overlap rule for semantic damage masks: where instances overlap, the class that
# comes first here wins (CarDD, section III: crack > dent > scratch). Classes absent here
# rank after the listed ones, in taxonomy order.
DAMAGE_PRIORITY: tuple[str, ...] = (
    "crack", "glass_shatter", "lamp_broken", "tire_flat", "broken", "dent", "scratch", "damage",
)

# ----------------------------------------------------------------------- car state
SOCAR_STATE = Taxonomy(
    "socar_state",
    (
        "exterior_normal", "exterior_defect", "exterior_dirt", "exterior_wash",
        "interior_normal", "interior_dirt_seat", "interior_dirt_floor", "interior_dirt_cupholder",
        "interior_dirt_dashboard", "interior_dirt_trunk", "interior_stain", "interior_trash",
        "interior_damage", "interior_wash",
    ),
    source="SOCAR car-state dataset, Table 1 (14 classes; carcheck's snake_case names)",
)
SOCAR_DEFECT = Taxonomy("socar_defect", ("normal", "defect"), source="SOCAR binary defect task")
SOCAR_DIRT = Taxonomy("socar_dirt", ("clean", "dirty"), source="SOCAR binary dirt task")
SEVERITY = Taxonomy("severity", ("minor", "moderate", "severe"), source="vds_damage_severity folders")


def _taxonomies(*items: Taxonomy) -> Mapping[str, Taxonomy]:
    return MappingProxyType({t.name: t for t in items})


TAXONOMIES: Mapping[str, Taxonomy] = _taxonomies(
    DSMLR_PARTS, REDUCED_PARTS, LPLENKA_PARTS, COMPCARS_PARTS, CARDD_DAMAGE, LENSOR_DAMAGE, LPLENKA_DAMAGE,
    DAMAGE_TYPE, DAMAGE_BINARY, DAMAGE_ORIGINAL, DAMAGE_REDUCED, DAMAGE_CATEGORICAL, SOCAR_STATE, SOCAR_DEFECT,
    SOCAR_DIRT, SEVERITY,
)

_INTERIOR_DIRT = ("interior_dirt_seat", "interior_dirt_floor", "interior_dirt_cupholder", "interior_dirt_dashboard",
                  "interior_dirt_trunk", "interior_stain", "interior_trash")

_MAPPINGS = [
    TaxonomyMapping(DSMLR_PARTS, REDUCED_PARTS, {
        "back_bumper": "back_bumper", "back_glass": "back_glass", "back_left_door": "back_door",
        "back_right_door": "back_door", "back_left_light": "back_light", "back_right_light": "back_light",
        "front_bumper": "front_bumper", "front_glass": "front_glass", "front_left_door": "front_door",
        "front_right_door": "front_door", "front_left_light": "front_light", "front_right_light": "front_light",
        "hood": "hood", "left_mirror": "mirror", "right_mirror": "mirror", "tailgate": "tailgate",
        "trunk": "trunk", "wheel": "wheel",
    }),
    # DSMLR -> lplenka: what the lplenka annotators would have labelled.
    TaxonomyMapping(DSMLR_PARTS, LPLENKA_PARTS, {
        "back_bumper": "rear_bumper", "back_glass": None, "back_left_door": "door", "back_right_door": "door",
        "back_left_light": "headlamp", "back_right_light": "headlamp", "front_bumper": "front_bumper",
        "front_glass": None, "front_left_door": "door", "front_right_door": "door", "front_left_light": "headlamp",
        "front_right_light": "headlamp", "hood": "hood", "left_mirror": None, "right_mirror": None,
        "tailgate": None, "trunk": None, "wheel": None,
    }),
    TaxonomyMapping(LENSOR_DAMAGE, DAMAGE_TYPE, {
        "minor-dent": "dent", "moderate-dent": "dent", "severe-dent": "dent",
        "minor-scratch": "scratch", "moderate-scratch": "scratch", "severe-scratch": "scratch",
        "moderate-broken": "broken", "severe-broken": "broken",
    }),
    # lensor -> CarDD for training a CarDD-taxonomy model on both sets: dents and scratches are CarDD's;
    # "broken" may be a crack, glass shatter, lamp broken or a crushed panel: ignored, not background.
    TaxonomyMapping(LENSOR_DAMAGE, CARDD_DAMAGE, {
        "minor-dent": "dent", "moderate-dent": "dent", "severe-dent": "dent",
        "minor-scratch": "scratch", "moderate-scratch": "scratch", "severe-scratch": "scratch",
        "moderate-broken": IGNORE, "severe-broken": IGNORE,
    }),
    TaxonomyMapping(LENSOR_DAMAGE, DAMAGE_BINARY, {c: "damage" for c in LENSOR_DAMAGE.classes}),
    TaxonomyMapping(LENSOR_DAMAGE, SEVERITY, {c: c.split("-")[0] for c in LENSOR_DAMAGE.classes}),
    TaxonomyMapping(LPLENKA_DAMAGE, DAMAGE_BINARY, {"damage": "damage"}),
    TaxonomyMapping(DAMAGE_TYPE, DAMAGE_BINARY, {c: "damage" for c in DAMAGE_TYPE.classes}),
    TaxonomyMapping(CARDD_DAMAGE, DAMAGE_ORIGINAL, {c: c for c in CARDD_DAMAGE.classes}),
    TaxonomyMapping(CARDD_DAMAGE, DAMAGE_REDUCED, {
        "dent": "dent", "scratch": "scratch", "crack": "crack", "glass_shatter": "broken_glass_or_lamp",
        "lamp_broken": "broken_glass_or_lamp", "tire_flat": "tire_flat",
    }),
    TaxonomyMapping(CARDD_DAMAGE, DAMAGE_CATEGORICAL, {
        "dent": "deformation", "tire_flat": "deformation", "scratch": "surface", "crack": "surface",
        "glass_shatter": "breakage", "lamp_broken": "breakage",
    }),
    TaxonomyMapping(CARDD_DAMAGE, DAMAGE_BINARY, {c: "damage" for c in CARDD_DAMAGE.classes}),
    TaxonomyMapping(CARDD_DAMAGE, DAMAGE_TYPE, {
        "dent": "dent", "scratch": "scratch", "crack": "broken", "glass_shatter": "broken",
        "lamp_broken": "broken", "tire_flat": None,
    }),
    TaxonomyMapping(SOCAR_STATE, SOCAR_DEFECT, {
        "exterior_normal": "normal", "exterior_defect": "defect", "exterior_dirt": "normal",
        "exterior_wash": "normal", "interior_damage": "defect",
        **{c: "normal" for c in ("interior_normal", "interior_wash", *_INTERIOR_DIRT)},
    }),
    TaxonomyMapping(SOCAR_STATE, SOCAR_DIRT, {
        "exterior_normal": "clean", "exterior_defect": None, "exterior_dirt": "dirty", "exterior_wash": "clean",
        "interior_normal": "clean", "interior_wash": "clean", "interior_damage": None,
        **{c: "dirty" for c in _INTERIOR_DIRT},
    }),
]

MAPPINGS: Mapping[tuple[str, str], TaxonomyMapping] = MappingProxyType({m.key: m for m in _MAPPINGS})


def get_taxonomy(name: str) -> Taxonomy:
    """Look a taxonomy up by name.

    Raises:
        TaxonomyError: naming the known taxonomies, if ``name`` is unknown.
    """
    try:
        return TAXONOMIES[name]
    except KeyError:
        raise TaxonomyError(f"unknown taxonomy {name!r}; known: {sorted(TAXONOMIES)}") from None


def get_mapping(source: str, target: str) -> TaxonomyMapping:
    """The declared mapping ``source -> target`` (identity when equal).

    Raises:
        TaxonomyError: if no such mapping is declared.
    """
    if source == target:
        t = get_taxonomy(source)
        return TaxonomyMapping(t, t, {c: c for c in t.classes})
    try:
        return MAPPINGS[(source, target)]
    except KeyError:
        raise TaxonomyError(
            f"no mapping declared from {source!r} to {target!r}; declared: {sorted(MAPPINGS)}"
        ) from None


#: Stanford Cars makes spelled with two words (the class folder names join words with ``_``).
TWO_WORD_MAKES = ("AM_General", "Aston_Martin", "Land_Rover")


def make_of(model_class: str) -> str:
    """The make of a Stanford Cars model class name: its first ``_``-separated token
    (``"Audi_A5_Coupe_2012"`` -> ``"Audi"``), or the two-word makes of :data:`TWO_WORD_MAKES`
    with a space (``"Land_Rover_LR2_SUV_2012"`` -> ``"Land Rover"``)."""
    for m in TWO_WORD_MAKES:
        if model_class.startswith(m + "_"):
            return m.replace("_", " ")
    return model_class.split("_", 1)[0]
