"""``carcheck evaluate segmentation``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ._common import PRECISION_HELP, check_precision, console, emit_json, esc, track

app = typer.Typer(help="Evaluate carcheck models on held-out data.", no_args_is_help=True)


def _annotation_files(data: Path, split: str | None = None) -> list[str]:
    """COCO files of ``data``: the file itself, a YOLO-seg folder's ``split`` (default ``test``)
    converted to COCO, or every COCO file under a folder."""
    from ..data.coco import find_coco_files
    from ..data.images import ImageLoadError
    from ..data.yolo import YoloFormatError, coco_file_for_yolo, yolo_yaml_for

    yaml_path = yolo_yaml_for(data)
    if yaml_path is not None:
        try:
            return [str(coco_file_for_yolo(yaml_path, split or "test"))]
        except (KeyError, YoloFormatError, ImageLoadError) as e:
            raise typer.BadParameter(str(e).strip("'\"")) from None
    if split is not None:
        raise typer.BadParameter("--split applies to YOLO folders (with data.yaml) only")
    if data.is_file():
        return [str(data)]
    files = find_coco_files(data)
    if not files:
        raise typer.BadParameter(f"{data}: no COCO annotation file found")
    return [str(f) for f in files]


@app.command("segmentation")
def segmentation(
    data: Path = typer.Argument(..., help="COCO annotation file, a dataset folder in the same format as ../shared/data, "
                                "or a YOLO-seg folder with data.yaml (e.g. CarDD; its test split unless --split)."),
    task: str = typer.Option("parts", help="Head to evaluate (parts or damage)."),
    taxonomy: Optional[str] = typer.Option(None, help="Ground-truth taxonomy (default: the head's; e.g. damage_binary)."),
    weights: Optional[List[Path]] = typer.Option(None, help="Model weights (.safetensors), repeatable; default: the "
                                                 "shipped models (first file with the head serves it)."),
    compare: Optional[Path] = typer.Option(None, help="Second model: bootstrap 95% CI of the mIoU difference."),
    replicates: int = typer.Option(5000, help="Bootstrap replicates (over images)."),
    instances: bool = typer.Option(False, help="Also COCO box/mask AP (overall, AP50/75, S/M/L with CarDD's area "
                                   "cuts, per class) of the regions the shipped fusion produces."),
    instances_from: str = typer.Option("fusion", help="fusion (the assessment's regions), components (of the damage "
                                       "map) or head (the CenterNet instance head; --task damage)."),
    instance_head: Optional[Path] = typer.Option(None, help="Instance head file for --instances-from head (default: "
                                                 "the shipped one)."),
    sod: bool = typer.Option(False, help="Also the salient-object metrics of the damage map (CarDD Table VIII)."),
    split: Optional[str] = typer.Option(None, help="Split of a YOLO folder: train, val or test (default test)."),
    longest: int = typer.Option(512, help="Network input, longer side in px (CarDD's native 640 for CarDD)."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics as JSON on stdout."),
    precision: str = typer.Option("auto", callback=check_precision, help=PRECISION_HELP),
) -> None:
    """Per-class IoU, mIoU (with/without background), confusion matrix; optional instance AP
    and a bootstrap comparison of two models."""
    from ..evaluate.metrics import bootstrap_miou_difference
    from ..evaluate.segmentation import evaluate_segmentation
    from ..pipeline.photo import fusion_detections
    from ..models.inference import DEFAULT_SEGMENTERS, load_segmenter, load_segmenters
    from ..models.runtime import resolve_precision

    if instances_from not in ("fusion", "components", "head"):
        raise typer.BadParameter("--instances-from must be fusion, components or head")
    files = _annotation_files(data, split)
    weights = weights or list(DEFAULT_SEGMENTERS)
    try:
        model = load_segmenters(weights)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/] {esc(e)}", highlight=False)
        raise typer.Exit(2)
    head = None
    if instances and instances_from == "head":
        from ..models.instances import INSTANCE_HEAD, load_instance_head

        try:
            head = load_instance_head(instance_head or INSTANCE_HEAD)
        except (FileNotFoundError, ValueError) as e:
            console.print(f"[red]error:[/] {esc(e)}", highlight=False)
            raise typer.Exit(2)
    try:
        res = evaluate_segmentation(model, files, task, taxonomy, instances=instances, precision=precision,
                                    track=track, on_error=lambda m: console.print(f"[yellow]{esc(m)}[/]", highlight=False),
                                    sod=sod, instances_from=instances_from, longest=longest, fusion=fusion_detections,
                                    instance_head=head)
    except (KeyError, ValueError) as e:
        console.print(f"[red]error:[/] {esc(str(e).strip(chr(39)))}", highlight=False)
        raise typer.Exit(2)
    out = res.to_dict()
    out["precision"] = resolve_precision(precision)
    out["weights"] = [str(w) for w in weights]
    out["data"] = files
    if head is not None:
        out["instance_head"] = str(instance_head or INSTANCE_HEAD)
    if compare is not None:
        other = evaluate_segmentation(load_segmenter(compare), files, task, taxonomy, precision=precision, track=track,
                                      longest=longest)
        out["bootstrap_vs"] = {"other": str(compare), "miou_other": other.to_dict()["miou"],
                               **bootstrap_miou_difference(res.per_image, other.per_image, replicates)}
    if json_out:
        emit_json(out)
        return
    t = Table(title=f"{esc(task)} on {esc(data)} ({out['images']} images, taxonomy {esc(out['taxonomy'])})",
              title_justify="left")
    t.add_column("class")
    t.add_column("IoU", justify="right")
    for c, v in out["iou"].items():
        t.add_row(esc(c), "-" if v is None else f"{v:.3f}")
    t.add_row("[b]mIoU[/]", f"[b]{out['miou']:.3f}[/]")
    t.add_row("[b]mIoU (no background)[/]", f"[b]{out['miou_no_bg']:.3f}[/]")
    console.print(t)
    if out["instance_ap"]:
        if out.get("instance_ms_per_photo") is not None:
            console.print(f"instances from {esc(out['instances_from'])}: {out['instance_ms_per_photo']:.1f} ms per photo "
                          "(median, the instance step alone)", highlight=False)
        for kind in ("bbox", "segm"):
            console.print(f"{kind} AP: " + ", ".join(f"{esc(k)} {v:.3f}" for k, v in out["instance_ap"][kind].items()),
                          highlight=False)
    if out.get("sod"):
        console.print("SOD: " + ", ".join(f"{k} {v:.3f}" for k, v in out["sod"].items() if k != "images"), highlight=False)
    if "bootstrap_vs" in out:
        b = out["bootstrap_vs"]
        console.print(f"mIoU difference vs {esc(compare)}: {b['diff']:+.4f}, 95% CI [{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}]")


@app.command("classifier")
def classifier(
    weights: Path = typer.Argument(..., help="Head file (.safetensors) from `carcheck train classifier`."),
    data: Path = typer.Argument(..., help="Label CSV or folder-per-class root."),
    split: str = typer.Option("test", help="Split to score (train/val/test) or 'all'."),
    ood: Optional[Path] = typer.Option(None, help="Out-of-scope photos (CSV or folder): OOD AUROC of max logit / MSP."),
    cache_dir: Path = typer.Option(Path("runs/feature_cache")),
    json_out: bool = typer.Option(False, "--json", help="Print metrics as JSON on stdout."),
    precision: str = typer.Option("auto", callback=check_precision, help=PRECISION_HELP),
) -> None:
    """Accuracy, macro precision / recall / F1, confusion matrix, per-source accuracy (and OOD AUROC)."""
    from ..evaluate.classifier import evaluate_classifier
    from ..models.runtime import resolve_precision

    try:
        res = evaluate_classifier(weights, data, None if split == "all" else split, ood, str(cache_dir), track,
                                  precision=precision)
        res["precision"] = resolve_precision(precision)
    except (ValueError, FileNotFoundError) as e:  # FolderFormatError (a malformed label CSV) is a ValueError
        console.print(f"[red]error:[/] {esc(e)}", highlight=False)
        raise typer.Exit(2)
    if json_out:
        emit_json(res)
        return
    t = Table(title=f"{esc(res['task'])} on {esc(data)} ({res['n']} photos, split {esc(split)})", title_justify="left")
    for c in ("class", "precision", "recall", "F1", "support"):
        t.add_column(c, justify="left" if c == "class" else "right")
    for c, m in res["per_class"].items():
        t.add_row(esc(c), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    t.add_row("[b]macro[/]", f"{res['macro_precision']:.3f}", f"{res['macro_recall']:.3f}", f"{res['macro_f1']:.3f}", "")
    console.print(t)
    console.print(f"accuracy {res['accuracy']:.3f}" + (f", top-5 {res['top5_accuracy']:.3f}" if "top5_accuracy" in res else ""))
    for s, a in res["per_source_accuracy"].items():
        console.print(f"  {esc(s)}: accuracy {a:.3f}", highlight=False)
    cm = Table(title="confusion (rows = true)", title_justify="left")
    cm.add_column("")
    for c in res["classes"]:
        cm.add_column(esc(c[:12]), justify="right")
    for c, row in zip(res["classes"], res["confusion"]):
        cm.add_row(esc(c[:24]), *map(str, row))
    console.print(cm)
    if "ood" in res:
        o = res["ood"]
        console.print(f"OOD AUROC: max logit {o['auroc_max_logit']:.3f}, MSP {o['auroc_msp']:.3f}"
                      + (f"; at threshold {o['threshold']}: in kept {o['in_kept']:.3f}, out rejected {o['out_rejected']:.3f}"
                         if "threshold" in o else ""))
