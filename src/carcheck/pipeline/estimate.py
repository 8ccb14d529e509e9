"""Repair estimate: price every finding of a case with a declared rule table (issue 19).

A finding (part x damage type x size class) is priced by the FIRST rule of the cost table that matches it:
the rule names the operation (repair, paintless dent repair, paint, replace), the labour hours, the paint and
materials cost, and whether a new part is bought. The vehicle class (from the make the report identified when
the car is in scope, else the table's default class, or a caller's override) scales labour, paint and part
costs; each operation has one scale factor (the only numbers fitted to real claims, ``bench/accuracy/claims.py``).
On one part, the largest operation (replace > repair > paint > paintless dent repair) includes the smaller
ones: a replaced bumper is not also polished. Every amount is a low-high range in the table's currency; each
line names the rule that produced it and the estimate says plainly that it is one.

The shipped table is ``cost_table.yaml`` beside this module (EUR, rough western-European levels); any other
table in the same format replaces it (``carcheck assess --cost-table FILE``). Tables are validated with
pydantic; a bad one raises :class:`CostTableError` naming the file and the field.

Pure: :func:`estimate_case` takes plain schema objects and returns a
:class:`~carcheck.schema.CaseEstimate`; only :func:`load_cost_table` reads a file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Iterable, Literal, Sequence

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from ..data.taxonomy import get_taxonomy
from ..schema import ESTIMATE_STATEMENT, CaseEstimate, EstimateLine

__all__ = ["DEFAULT_COST_TABLE", "OPERATIONS", "SIZES", "KNOWN_PARTS", "KNOWN_DAMAGE", "CostTableError", "Range",
           "VehicleClass", "CostRule", "CostTable", "load_cost_table", "default_cost_table", "vehicle_class_of",
           "price_finding", "estimate_case", "operation_totals"]

DEFAULT_COST_TABLE = Path(__file__).with_name("cost_table.yaml")
OPERATIONS = ("repair", "paintless dent repair", "paint", "replace")
#: which operation includes which on the same part (higher includes lower)
_RANK = {"paintless dent repair": 0, "paint": 1, "repair": 2, "replace": 3}
SIZES = ("small", "medium", "large")
#: part names of the part taxonomies a segmenter can output, plus "unassigned" (damage on no segmented part)
KNOWN_PARTS = tuple(dict.fromkeys([*get_taxonomy("dsmlr_parts").classes, *get_taxonomy("reduced_parts").classes,
                                   *get_taxonomy("lplenka_parts").classes, "unassigned"]))
#: damage types of the current damage model (dent, scratch, broken) and of CarDD (six types)
KNOWN_DAMAGE = tuple(dict.fromkeys([*get_taxonomy("damage_type").classes, *get_taxonomy("cardd_damage").classes]))


class CostTableError(ValueError):
    """A cost table that cannot be used; the message names the file and the field."""


def _pair(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (v, v)
    return v


class Range(BaseModel):
    """A low-high amount (``[low, high]`` in YAML, or one number for both)."""

    model_config = ConfigDict(frozen=True)
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, v):
        v = _pair(v)
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise ValueError(f"expected [low, high], got {len(v)} value(s)")
            return {"low": v[0], "high": v[1]}
        return v

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self

    def scaled(self, f: float) -> tuple[float, float]:
        return (self.low * f, self.high * f)


ZERO = Range(low=0, high=0)


class VehicleClass(BaseModel):
    """Multipliers of a vehicle class (1.0 = the prices as written)."""

    model_config = ConfigDict(extra="forbid")
    labour: float = Field(1.0, gt=0)
    paint: float = Field(1.0, gt=0)
    part: float = Field(1.0, gt=0)


def _star_or_list(v):
    return ["*"] if v == "*" else v


Names = Annotated[list[str], BeforeValidator(_star_or_list)]


class CostRule(BaseModel):
    """One row of the table: which findings it matches and how they are repaired.

    Attributes:
        id: unique name, written on every line the rule prices.
        parts / damage / size: what it matches: part-group names or part names, damage types, size classes;
            ``"*"`` matches anything.
        operation: one of :data:`OPERATIONS`.
        labour_hours: low-high hours (times ``labour_rate``).
        paint: low-high paint and materials cost.
        part: a new part is bought at the group's ``part_prices``.
        part_cost: a new part at this price instead (for parts the segmenter does not label: tyres, side windows).
    """

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    parts: Names
    damage: Names
    size: Names
    operation: Literal["repair", "paintless dent repair", "paint", "replace"]
    labour_hours: Range
    paint: Range = ZERO
    part: bool = False
    part_cost: Range | None = None

    @model_validator(mode="after")
    def _check(self):
        for s in self.size:
            if s != "*" and s not in SIZES:
                raise ValueError(f"size {s!r} is not one of {', '.join(SIZES)} or '*'")
        if self.part and self.part_cost is not None:
            raise ValueError("give either part: true (the group's price) or part_cost, not both")
        return self

    def matches(self, group: str | None, part: str, damage: str, size: str) -> bool:
        return (("*" in self.parts or part in self.parts or (group is not None and group in self.parts))
                and ("*" in self.damage or damage in self.damage) and ("*" in self.size or size in self.size))


class CostTable(BaseModel):
    """A whole cost table (see ``cost_table.yaml`` for the format, commented).

    Raises (at validation): ValueError for an unknown default class, a make mapped to an unknown class, a part in
    two groups, a rule naming an unknown group or part, a ``part: true`` rule without a part price, duplicate
    rule ids, a missing scale factor, or a (part, damage type, size) of the known taxonomies that no rule prices.
    """

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    name: str = "custom"
    currency: str = Field(min_length=1)
    statement: str = ESTIMATE_STATEMENT
    labour_rate: Range
    scale: dict[str, float] = Field(default_factory=lambda: {op: 1.0 for op in OPERATIONS})
    default_class: str
    vehicle_classes: dict[str, VehicleClass]
    makes: dict[str, str] = {}
    part_groups: dict[str, list[str]]
    part_prices: dict[str, Range] = {}
    rules: list[CostRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self):
        if self.default_class not in self.vehicle_classes:
            raise ValueError(f"default_class {self.default_class!r} is not in vehicle_classes "
                             f"({', '.join(self.vehicle_classes)})")
        for make, cls in self.makes.items():
            if cls not in self.vehicle_classes:
                raise ValueError(f"makes.{make}: class {cls!r} is not in vehicle_classes")
        for op in OPERATIONS:
            if op not in self.scale:
                raise ValueError(f"scale: no factor for {op!r}")
        for op, f in self.scale.items():
            if op not in OPERATIONS:
                raise ValueError(f"scale.{op}: unknown operation (operations: {', '.join(OPERATIONS)})")
            if f < 0:
                raise ValueError(f"scale.{op}: {f} < 0")
        seen: dict[str, str] = {}
        for g, members in self.part_groups.items():
            for p in members:
                if p in seen:
                    raise ValueError(f"part_groups: {p!r} is in both {seen[p]!r} and {g!r}")
                seen[p] = g
        for g in self.part_prices:
            if g not in self.part_groups:
                raise ValueError(f"part_prices.{g}: not a group of part_groups")
        ids = set()
        for i, r in enumerate(self.rules):
            if r.id in ids:
                raise ValueError(f"rules.{i}.id: duplicate rule id {r.id!r}")
            ids.add(r.id)
            for p in r.parts:
                if p != "*" and p not in self.part_groups and p not in seen and p not in KNOWN_PARTS:
                    raise ValueError(f"rules.{i} ({r.id}).parts: {p!r} is neither a part group nor a known part")
            for d in r.damage:
                if d != "*" and d not in KNOWN_DAMAGE:
                    raise ValueError(f"rules.{i} ({r.id}).damage: unknown damage type {d!r} "
                                     f"(known: {', '.join(KNOWN_DAMAGE)})")
            if r.part:
                groups = [p if p in self.part_groups else seen.get(p) for p in r.parts]
                missing = [p for p, g in zip(r.parts, groups) if g is None or g not in self.part_prices]
                if missing:
                    raise ValueError(f"rules.{i} ({r.id}): part: true needs a part price for {missing} "
                                     "(add the group to part_prices, or give part_cost)")
        uncovered = [(p, d, s) for p in KNOWN_PARTS for d in KNOWN_DAMAGE for s in SIZES
                     if self.rule_for(p, d, s) is None]
        if uncovered:
            shown = ", ".join(f"{p}/{d}/{s}" for p, d, s in uncovered[:5])
            raise ValueError(f"rules: {len(uncovered)} (part, damage, size) combination(s) match no rule, e.g. {shown} "
                             "(add rules, or a catch-all with parts: '*')")
        return self

    def group_of(self, part: str) -> str | None:
        """The part group of ``part`` (None when it is in none)."""
        for g, members in self.part_groups.items():
            if part in members:
                return g
        return None

    def rule_for(self, part: str, damage: str, size: str) -> CostRule | None:
        """The first rule that matches, or None."""
        g = self.group_of(part)
        return next((r for r in self.rules if r.matches(g, part, damage, size)), None)


def _field_path(loc: Iterable) -> str:
    return ".".join(str(x) for x in loc) or "(top level)"


def load_cost_table(path: str | Path | None = None) -> tuple[CostTable, str]:
    """Read and validate a cost table.

    Args:
        path: a YAML file; None: the shipped default.
    Returns:
        (the table, a label for reports: ``"default v1"`` or ``"<file> v<version>"``).
    Raises:
        CostTableError: ``"<file>: <field>: <problem>"`` for a missing or unreadable file, bad YAML or a field
            that fails validation.
    """
    if path is None:
        return default_cost_table(), f"default v{default_cost_table().version} ({default_cost_table().name})"
    return _load(Path(path)), f"{Path(path)} v{_load(Path(path)).version}"


def _load(path: Path) -> CostTable:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CostTableError(f"{path}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise CostTableError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise CostTableError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise CostTableError(f"{path}: a cost table is a YAML mapping (currency, labour_rate, rules...), "
                             f"got {type(raw).__name__}")
    try:
        return CostTable.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise CostTableError(f"{path}: {_field_path(err['loc'])}: {msg}{more}") from None


@lru_cache(maxsize=1)
def default_cost_table() -> CostTable:
    """The shipped table (``cost_table.yaml``), validated once."""
    return _load(DEFAULT_COST_TABLE)


def vehicle_class_of(table: CostTable, make: str | None, in_scope: bool = True,
                     override: str | None = None) -> tuple[str, str]:
    """The vehicle class for the estimate and why.

    Args:
        make: the make the report identified (``report.vehicle.make_top3[0].label``), or None.
        in_scope: False when the make/model head calls the car out of scope (then the make is not used).
        override: a class named by the caller (e.g. from the claim's own data).
    Returns:
        (class name, source in words).
    Raises:
        ValueError: ``override`` is not a class of the table.
    """
    if override is not None:
        if override not in table.vehicle_classes:
            raise ValueError(f"vehicle class {override!r} is not in the cost table ({', '.join(table.vehicle_classes)})")
        return override, "given by the caller"
    if make and in_scope and make in table.makes:
        return table.makes[make], f"make {make} identified in the photos"
    if make and not in_scope:
        return table.default_class, "default class: the car is outside the models the make/model head knows"
    if make:
        return table.default_class, f"default class: make {make} is not in the cost table"
    return table.default_class, "default class: no make/model identified"


def price_finding(table: CostTable, part: str, damage: str, size: str, vehicle_class: str) -> EstimateLine:
    """Price one (part, damage, size) finding with the table's first matching rule.

    Returns:
        an :class:`EstimateLine` (photos and review flag empty: :func:`estimate_case` fills them).
    Raises:
        ValueError: no rule matches (a custom table without a catch-all, for a part outside the known
            taxonomies), or ``size`` is not a size class.
    """
    if size not in SIZES:
        raise ValueError(f"size class {size!r} is not one of {', '.join(SIZES)}")
    rule = table.rule_for(part, damage, size)
    if rule is None:
        raise ValueError(f"cost table {table.name!r}: no rule prices {part}/{damage}/{size}")
    vc = table.vehicle_classes[vehicle_class]
    s = table.scale[rule.operation]
    hours = (rule.labour_hours.low, rule.labour_hours.high)
    labour = (hours[0] * table.labour_rate.low * vc.labour * s, hours[1] * table.labour_rate.high * vc.labour * s)
    paint = rule.paint.scaled(vc.paint * s)
    if rule.part_cost is not None:
        parts = rule.part_cost.scaled(vc.part * s)
    elif rule.part:
        parts = table.part_prices[table.group_of(part) or part].scaled(vc.part * s)
    else:
        parts = (0.0, 0.0)
    total = tuple(round(a + b + c, 2) for a, b, c in zip(labour, paint, parts))
    r2 = lambda t: (round(t[0], 2), round(t[1], 2))  # noqa: E731
    return EstimateLine(part=part, damage=damage, size_class=size, operation=rule.operation, rule=rule.id,
                        labour_hours=hours, labour=r2(labour), paint=r2(paint), parts=r2(parts), total=total)


def estimate_case(findings: Sequence, vehicle=None, table: CostTable | None = None, table_label: str | None = None,
                  vehicle_class: str | None = None) -> CaseEstimate:
    """The repair estimate of a case.

    Args:
        findings: the report's :class:`~carcheck.schema.Finding` objects (anything with ``part``,
            ``damage``, ``size_class``; ``needs_review`` and ``photos`` are used when present).
        vehicle: the report's :class:`~carcheck.schema.VehicleIdentity` or None: its top make picks
            the vehicle class when ``in_scope``.
        table: the cost table (default: the shipped one); table_label: how the report names it.
        vehicle_class: a class to use instead of the identified one.
    Returns:
        a :class:`~carcheck.schema.CaseEstimate`: one line per finding (in the order given), the
        case total as the sum of the lines not included in a larger operation on the same part.
    Raises:
        ValueError: from :func:`price_finding` / :func:`vehicle_class_of`.
    """
    if table is None:
        table, label = default_cost_table(), f"default v{default_cost_table().version} ({default_cost_table().name})"
    else:
        label = table_label or f"{table.name} v{table.version}"
    make = vehicle.make_top3[0].label if vehicle is not None and vehicle.make_top3 else None
    cls, why = vehicle_class_of(table, make, bool(vehicle is not None and vehicle.in_scope), vehicle_class)
    lines = []
    for f in findings:
        line = price_finding(table, f.part, f.damage, f.size_class, cls)
        line.needs_review = bool(getattr(f, "needs_review", False))
        line.photos = list(getattr(f, "photos", []) or [])
        lines.append(line)
    # one part, several findings: the largest operation includes the others (unassigned damage is not one part)
    by_part: dict[str, list[EstimateLine]] = {}
    for line in lines:
        if line.part != "unassigned":
            by_part.setdefault(line.part, []).append(line)
    for same in by_part.values():
        if len(same) < 2:
            continue
        top = max(same, key=lambda ln: (_RANK[ln.operation], ln.total[1]))
        for ln in same:
            if ln is not top and _RANK[ln.operation] <= _RANK[top.operation]:
                ln.included_in, ln.total = top.rule, (0.0, 0.0)
    low = round(sum(ln.total[0] for ln in lines), 2)
    high = round(sum(ln.total[1] for ln in lines), 2)
    return CaseEstimate(currency=table.currency, vehicle_class=cls, vehicle_class_source=why, lines=lines,
                        total=(low, high), midpoint=round((low + high) / 2, 2),
                        lines_for_review=sum(ln.needs_review for ln in lines), cost_table=label,
                        statement=table.statement)


def operation_totals(estimate: CaseEstimate) -> dict[str, float]:
    """Midpoint cost of each operation in an estimate (the case total = sum over operations of
    ``scale[op] x`` this at scale 1): what the bench fits the scale factors on."""
    out = {op: 0.0 for op in OPERATIONS}
    for ln in estimate.lines:
        out[ln.operation] += (ln.total[0] + ln.total[1]) / 2
    return out
