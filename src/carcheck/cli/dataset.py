"""``carcheck dataset stats|check``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._common import console, emit_json, esc, track

app = typer.Typer(help="Inspect and validate datasets (COCO, YOLO, folder-per-class, pairs CSV).",
                  no_args_is_help=True)


@app.command("stats")
def stats(path: Path = typer.Argument(..., help="Dataset folder (or a folder of datasets)."),
          json_out: bool = typer.Option(False, "--json", help="Print the numbers as JSON on stdout.")) -> None:
    """Per-class image and instance counts, with CarDD's small / medium / large split
    (instance area < 128², < 256², >= 256² px)."""
    from ..data.stats import dataset_stats

    try:
        result = dataset_stats(path, track=track)
    except FileNotFoundError as e:
        console.print(f"[red]error:[/] {esc(e)}", highlight=False)
        raise typer.Exit(2)
    if json_out:
        emit_json(result.to_dict())
        return
    if not result.sources:
        console.print(f"[yellow]no dataset found under {esc(path)}[/]", highlight=False)
        raise typer.Exit(1)
    for src in result.sources:
        t = Table(title=f"{esc(src['format'])} · {esc(src['split'])} · {src['images']} images\n{esc(src['source'])}",
                  title_justify="left")
        keys = [k for k in src["classes"][0].keys() if k != "area"] if src["classes"] else ["class"]
        for k in keys:
            t.add_column(k, justify="left" if k == "class" else "right")
        for row in src["classes"]:
            t.add_row(*[esc(row.get(k, "")) for k in keys])
        console.print(t)


@app.command("check")
def check(path: Path = typer.Argument(..., help="Dataset folder (or a folder of datasets)."),
          hash_threshold: int = typer.Option(10, help="Max Hamming distance (dHash and pHash, 64 bits each) "
                                                       "for near-duplicates."),
          no_duplicates: bool = typer.Option(False, "--no-duplicates", help="Skip the near-duplicate search."),
          max_shown: int = typer.Option(30, help="Problems listed in the text output."),
          json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout.")) -> None:
    """Validate a dataset: missing/unreadable images, unknown image or category ids, degenerate
    polygons, size mismatches, near-duplicates across splits. Exits 1 when there are errors."""
    try:
        from ..data.check import check_dataset

        report = check_dataset(path, hash_threshold=hash_threshold, duplicates=not no_duplicates, track=track)
    except FileNotFoundError as e:
        console.print(f"[red]error:[/] {esc(e)}", highlight=False)
        raise typer.Exit(2)
    if json_out:
        emit_json(report.to_dict())
    else:
        d = report.to_dict()
        t = Table(title=f"dataset check: {esc(path)}", title_justify="left")
        for c in ("dataset", "split", "format", "images"):
            t.add_column(c)
        for s in d["splits"]:
            t.add_row(esc(s["dataset"]), esc(s["split"]), s["format"], str(s["images"]))
        console.print(t)
        for p in report.problems[:max_shown]:
            console.print(f"[{'red' if p.severity == 'error' else 'yellow'}]{esc(p)}[/]", highlight=False)
        if len(report.problems) > max_shown:
            console.print(f"... {len(report.problems) - max_shown} more (use --json for all)")
        console.print(f"{report.images_checked} images checked: {len(report.errors)} errors, "
                      f"{len(report.problems) - len(report.errors)} warnings; counts {esc(d['problem_counts'])}")
        console.print("[green]OK[/]" if report.ok else "[red]FAILED[/]")
    if not report.ok:
        raise typer.Exit(1)


@app.command("recipe")
def recipe(name: str = typer.Argument(..., help="presence, damaged, severity, make_model, make_model196, part_crops or verification."),
           root: Path = typer.Option(Path("../shared/data"), help="Data root (holds car_parts, car_damage, ...)."),
           out: Path = typer.Option(..., help="Label CSV to write.")) -> None:
    """Write the label CSV (with its fixed, seeded split) that a shipped classifier was trained on."""
    from collections import Counter

    from ..data.folder import FolderFormatError
    from ..data.labels import write_label_csv
    from ..data.recipes import build_recipe

    try:
        rows = build_recipe(name, root)
    except (KeyError, FolderFormatError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {esc(e)}", highlight=False)
        raise typer.Exit(2)
    write_label_csv(rows, out)
    counts = Counter((r.split, r.label) for r in rows)
    console.print(f"{len(rows)} rows -> {esc(out)}", highlight=False)
    if len({r.label for r in rows}) <= 8:
        for (s, lab), n in sorted(counts.items()):
            console.print(f"  {s:5s} {esc(lab)}: {n}", highlight=False)


@app.command("negatives")
def negatives(recipe_csv: Path = typer.Argument(..., help="Label CSV of `carcheck dataset recipe damaged`."),
              out: Path = typer.Option(..., help="COCO JSON to write."),
              label: str = typer.Option("undamaged", help="Rows with this label are the negatives."),
              split: str = typer.Option("train", help="Only rows of this split (never train on test probes)."),
              taxonomy: str = typer.Option("cardd_damage", help="Categories the file declares.")) -> None:
    """Write a COCO file of hard negatives (photos with none of the taxonomy's classes, e.g. clean cars) to train
    beside labelled files: ``--task damage:cardd_damage:data/cardd,NEGATIVES.json:data/cardd``."""
    import json

    from ..data.coco import negatives_coco
    from ..data.images import ImageLoadError
    from ..data.labels import read_label_csv
    from ..data.taxonomy import TaxonomyError

    try:
        rows = [r for r in read_label_csv(recipe_csv) if r.label == label and r.split == split]
        coco = negatives_coco([r.path for r in rows], taxonomy)
    except (FileNotFoundError, ImageLoadError, TaxonomyError, ValueError) as e:
        console.print(f"[red]error:[/] {esc(e)}", highlight=False)
        raise typer.Exit(2)
    if not rows:
        console.print(f"[red]error:[/] no rows labelled {esc(label)!r} in split {esc(split)!r} of {esc(recipe_csv)}")
        raise typer.Exit(2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco))
    console.print(f"{len(rows)} negatives -> {esc(out)}", highlight=False)
