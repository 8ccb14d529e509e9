"""Damage x part plausibility: on which parts each damage type can occur, as declared data.

A :class:`PlausibilityTable` is a complete table from every class of a damage taxonomy to the parts
of a part taxonomy it can occur on (a flat tyre only on a wheel, a broken lamp only on a light...);
it is checked when built. :data:`PLAUSIBILITY` holds carcheck's tables over the DSMLR parts, CarDD's
declared here and the coarser damage taxonomies' derived through the mappings of
:mod:`carcheck.data.taxonomy`. The pipeline's plausibility rule (:mod:`carcheck.pipeline.plausibility`)
reads them through :func:`get_plausibility`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from .taxonomy import CARDD_DAMAGE, DSMLR_PARTS, LPLENKA_DAMAGE, MAPPINGS, Taxonomy, TaxonomyError, TaxonomyMapping

__all__ = ["PlausibilityTable", "CARDD_PLAUSIBILITY", "PLAUSIBILITY", "get_plausibility"]


@dataclass(frozen=True)
class PlausibilityTable:
    """On which parts each damage type can occur: a declared, complete table.

    Attributes:
        damage: the damage taxonomy.
        parts: the part taxonomy.
        table: every damage class -> the parts it can occur on (a non-empty subset of ``parts``).

    Raises:
        TaxonomyError: at construction, when a damage class is missing from ``table``, ``table``
            names a class the damage taxonomy lacks, a part the part taxonomy lacks, or a damage
            type has no plausible part.
    """

    damage: Taxonomy
    parts: Taxonomy
    table: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in self.damage.classes if c not in self.table]
        extra = [c for c in self.table if c not in self.damage.classes]
        bad_parts = sorted({p for ps in self.table.values() for p in ps} - set(self.parts.classes))
        empty = [c for c, ps in self.table.items() if not ps]
        if missing or extra or bad_parts or empty:
            raise TaxonomyError(
                f"plausibility {self.damage.name} x {self.parts.name} is incomplete or wrong: "
                f"undeclared={missing} unknown_damage={extra} unknown_parts={bad_parts} no_part={empty}")
        object.__setattr__(self, "table", MappingProxyType({k: frozenset(v) for k, v in self.table.items()}))

    def plausible(self, damage: str, part: str) -> bool:
        """Whether ``damage`` can occur on ``part``.

        Raises:
            TaxonomyError: an unknown damage class or part.
        """
        if damage not in self.table:
            raise TaxonomyError(f"{damage!r} is not a class of taxonomy {self.damage.name!r}")
        if part not in self.parts.classes:
            raise TaxonomyError(f"{part!r} is not a class of taxonomy {self.parts.name!r}")
        return part in self.table[damage]

    def derived(self, mapping: TaxonomyMapping) -> PlausibilityTable:
        """The table of ``mapping.target`` (a coarser damage taxonomy): a target class can occur
        wherever any source class mapped to it can. A target class no source class maps to can
        occur on every part (nothing is known against it).

        Raises:
            TaxonomyError: ``mapping`` does not map from this table's damage taxonomy.
        """
        if mapping.source.name != self.damage.name:
            raise TaxonomyError(f"mapping {mapping.key} does not start at {self.damage.name!r}")
        out: dict[str, set[str]] = {}
        for src, dst in mapping.table.items():
            if dst is not None:
                out.setdefault(dst, set()).update(self.table[src])
        return PlausibilityTable(mapping.target, self.parts,
                                 {c: frozenset(out.get(c, self.parts.classes)) for c in mapping.target.classes})


_GLASS = frozenset({"back_glass", "front_glass"})
_LIGHTS = frozenset({"back_left_light", "back_right_light", "front_left_light", "front_right_light"})
_WHEELS = frozenset({"wheel"})
_MIRRORS = frozenset({"left_mirror", "right_mirror"})
_DOORS = frozenset({"back_left_door", "back_right_door", "front_left_door", "front_right_door"})
_BODY = frozenset({"back_bumper", "front_bumper", "hood", "trunk", "tailgate"}) | _DOORS | _MIRRORS

#: CarDD's 6 types on the 18 DSMLR parts. Readings stated where a choice was made: DSMLR has no
#: side-window class (a side window is labelled as its door), so glass shatter is plausible on doors,
#: and on mirrors (their glass); crack covers cracked paint, bumpers, a windscreen crack and a
#: cracked lamp lens; scratch also scuffed glass, lenses and rims; dent only sheet metal and plastic
#: body parts (not glass, lamps or the wheel).
CARDD_PLAUSIBILITY = PlausibilityTable(CARDD_DAMAGE, DSMLR_PARTS, {
    "dent": _BODY,
    "scratch": _BODY | _GLASS | _LIGHTS | _WHEELS,
    "crack": _BODY | _GLASS | _LIGHTS,
    "glass_shatter": _GLASS | _DOORS | _MIRRORS,
    "lamp_broken": _LIGHTS,
    "tire_flat": _WHEELS,
})

#: damage taxonomy name -> its table over the DSMLR parts. ``damage_type`` (and the Table III merges)
#: follow from CarDD's through the declared mappings; a one-class damage taxonomy can occur anywhere.
PLAUSIBILITY: Mapping[str, PlausibilityTable] = MappingProxyType({
    CARDD_DAMAGE.name: CARDD_PLAUSIBILITY,
    **{t: CARDD_PLAUSIBILITY.derived(MAPPINGS[(CARDD_DAMAGE.name, t)])
       for t in ("damage_type", "damage_original", "damage_reduced", "damage_categorical", "damage_binary")},
    LPLENKA_DAMAGE.name: PlausibilityTable(LPLENKA_DAMAGE, DSMLR_PARTS, {"damage": DSMLR_PARTS.classes}),
})


def get_plausibility(damage_taxonomy: str, parts_taxonomy: str = DSMLR_PARTS.name) -> PlausibilityTable | None:
    """The declared plausibility table of a damage taxonomy over a part taxonomy, or None when none is
    declared (then every pair counts as plausible)."""
    t = PLAUSIBILITY.get(damage_taxonomy)
    return t if t is not None and t.parts.name == parts_taxonomy else None
