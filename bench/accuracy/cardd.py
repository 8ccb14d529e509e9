"""CarDD benchmark (issue 15): the damage model scored the way the CarDD paper scores it.

Held-out data: the CarDD test split that ships in ../shared/data/car_damage/cardd_roboflow (298 photos,
640x640 as Roboflow exported them; the model is chosen on valid, never on test). Tables:

1. Semantic: IoU per CarDD class, mIoU, and binary damage IoU (the six types merged).
2. Instances (COCO, pycocotools, CarDD's area cuts small < 128², medium < 256² px²): mask and box AP,
   AP50, AP75, AP_S/M/L and per-class mask AP (Table V) of three kinds of instances from the same pass: the
   regions the shipped fusion produces (parts from the shipped part model), the damage map's connected
   components, and the CenterNet instance head (issue 27, :mod:`carcheck.models.instances`), beside the paper's
   Mask R-CNN R50 and DCN+ R101 rows.
3. Salient-object metrics of the damage map 1 - P(no damage) (Table VIII) beside SGL-KRN and U²-Net.
4. Challenging setting (Table VI): undamaged photos (the damage filter recipe's held-out undamaged
   photos: DSMLR car_parts and Stanford Cars) added as false-positive probes; AP with and without the
   damage filter's double-check (CarDD V-G: a photo the damaged/undamaged classifier calls undamaged
   with P > 0.9 keeps no detection); share of probes with any detection.
5. Cross-dataset: the CarDD model on lensor_severity test (binary) and the shipped lensor-trained
   joint model on CarDD test (binary).
6. Speed: ms the CarDD decoder adds per photo on the shared backbone pass (512 px, 2 threads, the
   assessment's precision), beside the decoder it replaces, in the same run.
7. Parts: the shipped part model on car_parts/testset (mIoU).

Run: python bench/accuracy/cardd.py [--weights FILE] [--quick]  (needs only the shipped test split; the model
file defaults to the shipped src/carcheck/models/weights/segmenter_damage_cardd_lite0.safetensors).
Prints tables; writes bench/results/cardd.json.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import CARDD_TARGETS, DATA, RESULTS, ROOT, quick_coco, write_results  # noqa: E402,F401

import numpy as np
import torch

from _common import clock, median_time  # noqa: E402  (bench/ is on sys.path: see the top)
from carcheck.data.coco_dataset import CocoSegmentationDataset
from carcheck.data.images import load_image
from carcheck.data.taxonomy import get_taxonomy
from carcheck.data.yolo import annotation_file
from carcheck.evaluate.metrics import confusion_matrix, iou_from_confusion, miou
from carcheck.evaluate.segmentation import (SodAccumulator, coco_instance_ap, components_as_detections, encode_mask,
                                            evaluate_segmentation)
from carcheck.models.instances import INSTANCE_HEAD, damage_decoder_pass, head_input, load_instance_head
from carcheck.pipeline.photo import fusion_detections
from carcheck.models.backbone import inference_context
from carcheck.models.inference import DEFAULT_SEGMENTER, WEIGHTS_DIR, load_segmenters, to_input_tensor
from carcheck.models.runtime import cpu_info, resolve_precision, use_bf16

REPO = ROOT
CARDD = DATA / "car_damage" / "cardd_roboflow"
CARDD_MODEL = WEIGHTS_DIR / "segmenter_damage_cardd_lite0.safetensors"
PARTS_MODEL = WEIGHTS_DIR / "segmenter_parts_lite0.safetensors"

#: CarDD paper (Wang et al., IEEE T-ITS 2023) rows, as fractions.
PAPER = {
    "mask_rcnn_r50": {"segm_AP": 0.484, "AP_dent": 0.270, "AP_scratch": 0.222, "AP_crack": 0.093,
                      "AP_glass_shatter": 0.878, "AP_lamp_broken": 0.585, "AP_tire_flat": 0.858},
    "dcn_plus_r101": {"segm_AP": 0.570},
    # per class and small, as issue 27 quotes the paper (its best row)
    "issue27_quoted": {"AP_dent": 0.405, "AP_scratch": 0.343, "AP_crack": 0.166, "AP_glass_shatter": 0.896,
                       "AP_lamp_broken": 0.708, "AP_tire_flat": 0.900, "AP_S": 0.346},
    "sgl_krn": {"F_beta": 0.791, "weighted_F_beta": 0.744, "S_measure": 0.809, "E_measure": 0.884, "MAE": 0.071},
    "u2net": {"F_beta": 0.679, "weighted_F_beta": 0.663, "S_measure": 0.752, "E_measure": 0.842, "MAE": 0.089},
}
TARGETS = {**CARDD_TARGETS, "AP_glass_shatter": 0.75, "AP_tire_flat": 0.75, "parts_miou": 0.68}
#: issue 27's targets for the head's instances (CarDD test, 640 px)
HEAD_TARGETS = {"segm_AP": 0.45, "bbox_AP": 0.48, "AP_dent": 0.25, "AP_scratch": 0.22, "AP_crack": 0.10, "AP_S": 0.10,
                "head_adds_ms": 15}


def probe_photos(limit: int) -> list[Path]:
    """Held-out undamaged photos of the damage filter's recipe (its test split), so the filter never saw them."""
    recipe = REPO / "runs" / "recipes" / "damaged.csv"
    if not recipe.exists():
        import subprocess

        recipe.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "carcheck.cli", "dataset", "recipe", "damaged", "--root", str(DATA),
                        "--out", str(recipe)], check=True, capture_output=True)
    rows = [r for r in csv.DictReader(recipe.open()) if r["label"] == "undamaged" and r.get("split") == "test"]
    base = recipe.parent
    paths = [Path(r["file"]) if Path(r["file"]).is_absolute() else (base / r["file"]).resolve() for r in rows]
    rng = np.random.default_rng(0)
    rng.shuffle(paths)
    return sorted(paths[:limit])


def run_cardd(seg, heads, files, probes, longest: int, bf16: bool, head=None) -> dict:
    """One pass over CarDD test (+ probes): semantic confusion, fusion / component / head instances, SOD, filter
    probabilities, and the median ms of each kind's instance step."""
    tax = get_taxonomy("cardd_damage")
    part_names = list(get_taxonomy(seg.taxonomies["parts"]).classes)
    ds = CocoSegmentationDataset(files, "cardd_damage")
    n_cls = tax.num_classes + 1
    cm = np.zeros((n_cls, n_cls), np.int64)
    sod = SodAccumulator()
    gt_inst, dets, sizes, p_undamaged = [], [], {}, {}
    kinds = {"components": [], "head": []}
    ms = {"fusion": [], "components": [], "head": []}
    items = [("cardd", i) for i in range(len(ds))] + [("probe", p) for p in probes]
    for k, (kind, ref) in enumerate(items):
        if kind == "cardd":
            image, gt, insts = ds.load(ref)
        else:
            image, gt, insts = load_image(ref), None, []
        h, w = image.shape[:2]
        x = to_input_tensor(image, longest)
        with inference_context(bf16):
            out = seg.backbone(x, with_pooled=True)
            logits = seg.decode(out.features, tuple(x.shape[-2:]), ["parts"])
            y, dlog = damage_decoder_pass(seg, out.features)  # the damage decoder once: semantic map and head input
            logits["damage"] = torch.nn.functional.interpolate(dlog, size=tuple(x.shape[-2:]), mode="bilinear",
                                                               align_corners=False)
            hr = heads.run(out)
            hx, t_in = clock(head_input, y, dlog) if head is not None else (None, 0.0)
        probs = {t: torch.nn.functional.interpolate(v.float(), size=(h, w), mode="bilinear",
                                                    align_corners=False)[0].softmax(0).numpy()
                 for t, v in logits.items()}
        p_undamaged[k] = heads.probability(hr, "damaged", "undamaged")
        d = probs["damage"]
        if gt is not None:
            cm += confusion_matrix(d.argmax(0), gt, n_cls)
            sod.step(1.0 - d[0], (gt > 0) & (gt != 255))
            objs = [(tax.index(ds.category_map[i.category]) + 1, i.to_mask(h, w)) for i in insts
                    if ds.category_map.get(i.category)]
        else:
            objs = []
        gt_inst.append((k, objs))
        sizes[k] = (h, w)
        # each kind's instance step timed alone (not the RLE encoding of its masks for the evaluation)
        found, s_f = clock(fusion_detections, d, probs["parts"], tax.classes, part_names)
        dets += [(k, c, m, s) for c, m, s in found]
        found, s_c = clock(components_as_detections, d)
        kinds["components"] += [(k, c, encode_mask(m), s) for c, m, s in found]
        ms["fusion"].append(s_f)
        ms["components"].append(s_c)
        if head is not None:
            found, s_h = clock(head, hx, d.argmax(0), tuple(x.shape[-2:]), d)
            kinds["head"] += [(k, f[0], encode_mask(f[1]), *f[2:]) for f in found]
            ms["head"].append(s_h + t_in)
        if (k + 1) % 50 == 0:
            print(f"  {k + 1}/{len(items)} photos", flush=True)
    return {"cm": cm, "sod": sod.results(), "gt": gt_inst, "dets": dets, "sizes": sizes, "p_undamaged": p_undamaged,
            "n_cardd": len(ds), "classes": tax.classes, "kinds": kinds,
            "instance_ms": {k: round(1000 * float(np.median(v)), 2) for k, v in ms.items() if v and (k != "head" or head)}}


def kind_ap(r: dict, kind: str) -> dict:
    """COCO AP of one kind of instances (``components`` / ``head``) on the CarDD test photos only (no probes)."""
    keep = set(range(r["n_cardd"]))
    return coco_instance_ap([g for g in r["gt"] if g[0] in keep], [d for d in r["kinds"][kind] if d[0] in keep],
                            r["classes"], {k: v for k, v in r["sizes"].items() if k in keep})


def ap_of(r: dict, with_probes: bool, with_filter: bool, clean: float = 0.9) -> dict:
    keep = set(range(r["n_cardd"])) | (set(r["sizes"]) if with_probes else set())
    drop = {k for k, p in r["p_undamaged"].items() if with_filter and p is not None and p > clean}
    gt = [g for g in r["gt"] if g[0] in keep]
    dets = [d for d in r["dets"] if d[0] in keep and d[0] not in drop]
    return coco_instance_ap(gt, dets, r["classes"], {k: v for k, v in r["sizes"].items() if k in keep})


def decoder_ms(seg_new, seg_old) -> dict:
    x = torch.rand(1, 3, 384, 512).contiguous(memory_format=torch.channels_last)
    with inference_context():
        feats = seg_new.backbone(x).features

    def run(model, task):
        def f():
            with inference_context():
                model.decode(feats, (384, 512), [task])
        return f

    return {"cardd_decoder_ms": 1000 * median_time(run(seg_new, "damage")),
            "replaced_joint_decoder_ms": 1000 * median_time(run(seg_old, "damage"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=CARDD_MODEL, help="CarDD damage segmenter (.safetensors).")
    ap.add_argument("--probes", type=int, default=300, help="Undamaged probe photos (challenging setting).")
    ap.add_argument("--longest", type=int, default=640, help="Network input for CarDD photos (native 640).")
    ap.add_argument("--quick", action="store_true", help="30 test photos and 20 probes (a smoke run, not a result).")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cardd.json")
    ap.add_argument("--instance-head", type=Path, default=INSTANCE_HEAD, help="CenterNet instance head (issue 27).")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    if not CARDD.exists():
        sys.exit(f"{CARDD} is absent: the CarDD test split ships in ../shared/data (see docs/cardd.md)")
    from carcheck.pipeline.image_heads import ImageHeads

    t0 = time.time()
    bf16 = use_bf16("auto")
    seg = load_segmenters([args.weights, PARTS_MODEL])
    heads = ImageHeads(seg.backbone)
    test_file = str(annotation_file(str(CARDD), "test"))
    files = [test_file]
    probes = probe_photos(20 if args.quick else args.probes)
    if args.quick:
        files = [str(quick_coco(test_file, 30, "/tmp/cardd_quick.json"))]
    print(f"CarDD test: {files[0]}; {len(probes)} undamaged probes; precision {resolve_precision('auto')}")
    head = load_instance_head(args.instance_head) if args.instance_head.is_file() else None
    r = run_cardd(seg, heads, files, probes, args.longest, bf16, head)
    classes = ["background", *r["classes"]]
    iou = iou_from_confusion(r["cm"])
    cm_bin = np.array([[r["cm"][0, 0], r["cm"][0, 1:].sum()], [r["cm"][1:, 0].sum(), r["cm"][1:, 1:].sum()]])
    res = {
        "machine": cpu_info(), "precision": resolve_precision("auto"), "weights": str(args.weights.name),
        "parts_weights": PARTS_MODEL.name, "longest_px": args.longest, "quick": args.quick,
        "test_images": r["n_cardd"], "probe_images": len(probes),
        "semantic": {"iou": {c: round(float(v), 4) for c, v in zip(classes, iou)}, "miou": round(miou(r["cm"]), 4),
                     "miou_no_bg": round(miou(r["cm"], False), 4),
                     "binary_iou": round(float(iou_from_confusion(cm_bin)[1]), 4)},
        "instances": ap_of(r, False, False), "instances_from": "fusion (shipped part model)",
        "instances_components": kind_ap(r, "components"),
        **({"instances_head": kind_ap(r, "head"), "instance_head": args.instance_head.name} if head else {}),
        "instance_ms_per_photo": r["instance_ms"], "head_targets": HEAD_TARGETS,
        "sod": r["sod"],
        "challenging": {"without_filter": ap_of(r, True, False), "with_filter": ap_of(r, True, True),
                        "test_only_with_filter": ap_of(r, False, True),
                        "probes_with_any_detection": round(float(np.mean([
                            any(d[0] == k for d in r["dets"]) for k in range(r["n_cardd"], r["n_cardd"] + len(probes))]))
                            if probes else 0.0, 4),
                        "probes_with_detection_after_filter": round(float(np.mean([
                            any(d[0] == k for d in r["dets"]) and not ((r["p_undamaged"][k] or 0) > 0.9)
                            for k in range(r["n_cardd"], r["n_cardd"] + len(probes))])) if probes else 0.0, 4)},
        "paper": PAPER, "targets": TARGETS,
    }
    # cross-dataset (binary damage): CarDD model on lensor test; the shipped lensor joint model on CarDD test
    lensor = DATA / "car_damage" / "lensor_severity" / "annotations" / "instances_test.json"
    cross = {}
    if lensor.exists():
        lf = [str(lensor)]
        cross["cardd_model_on_lensor_test_binary_iou"] = evaluate_segmentation(
            load_segmenters([args.weights]), lf, "damage", "damage_binary").to_dict()["iou"]["damage"]
        cross["lensor_model_on_lensor_test_binary_iou"] = evaluate_segmentation(
            load_segmenters([DEFAULT_SEGMENTER]), lf, "damage", "damage_binary").to_dict()["iou"]["damage"]
    cross["lensor_model_on_cardd_test_binary_iou"] = evaluate_segmentation(
        load_segmenters([DEFAULT_SEGMENTER]), files, "damage", "damage_binary", longest=args.longest).to_dict()["iou"]["damage"]
    cross["cardd_model_on_cardd_test_binary_iou"] = res["semantic"]["binary_iou"]
    res["cross_dataset"] = cross
    parts_test = DATA / "car_parts" / "testset" / "annotations.json"
    if parts_test.exists():
        pr = evaluate_segmentation(load_segmenters([PARTS_MODEL]), [str(parts_test)], "parts").to_dict()
        res["parts"] = {"miou": pr["miou"], "weights": PARTS_MODEL.name, "images": pr["images"]}
    res["speed"] = {**decoder_ms(load_segmenters([args.weights]), load_segmenters([DEFAULT_SEGMENTER])),
                    "threads": torch.get_num_threads(), "input_px": [384, 512]}
    res["wall_s"] = round(time.time() - t0, 1)
    print_tables(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, res, indent=2)
    print(f"wrote {args.out}")


def print_tables(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"CarDD test ({res['test_images']} photos): semantic IoU", title_justify="left")
    t.add_column("class")
    t.add_column("IoU", justify="right")
    for c, v in res["semantic"]["iou"].items():
        t.add_row(c, f"{v:.3f}")
    t.add_row("mIoU", f"{res['semantic']['miou']:.3f}")
    t.add_row("binary damage IoU", f"{res['semantic']['binary_iou']:.3f} (target >= {TARGETS['binary_iou']})")
    con.print(t)
    t = Table(title="COCO AP, CarDD area cuts: fusion regions, components, instance head (mask / box)",
              title_justify="left")
    for c in ("metric", "fusion", "components", "head", "Mask R-CNN R50", "paper best (issue 27)", "head target"):
        t.add_column(c, justify="right")
    kinds = [res["instances"], res["instances_components"], res.get("instances_head")]

    def cell(r, k):
        return "-" if r is None else f"{r['segm'][k]:.3f} / {r['bbox'][k]:.3f}"

    for k in res["instances"]["segm"]:
        paper = PAPER["mask_rcnn_r50"].get("segm_AP" if k == "AP" else k)
        best = PAPER["dcn_plus_r101"]["segm_AP"] if k == "AP" else PAPER["issue27_quoted"].get(k)
        target = HEAD_TARGETS.get("segm_AP" if k == "AP" else k)
        t.add_row(k, *(cell(r, k) for r in kinds), "-" if paper is None else f"{paper:.3f}",
                  "-" if best is None else f"{best:.3f}", "-" if target is None else f">= {target}")
    ms = res.get("instance_ms_per_photo", {})
    t.add_row("ms per photo (instance step)", *(f"{ms[k]:.1f}" if k in ms else "-" for k in ("fusion", "components", "head")),
              "", "", f"<= {HEAD_TARGETS['head_adds_ms']}")
    con.print(t)
    s = res["sod"]
    t = Table(title="Salient-object metrics of the damage map (Table VIII)", title_justify="left")
    for c in ("model", "F_beta (max)", "weighted F_beta", "S-measure", "E-measure (mean)", "MAE"):
        t.add_column(c, justify="right")
    t.add_row("ours", *(f"{s[k]:.3f}" for k in ("F_beta_max", "weighted_F_beta", "S_measure", "E_measure_mean", "MAE")))
    for name in ("sgl_krn", "u2net"):
        p = PAPER[name]
        t.add_row(name, *(f"{p[k]:.3f}" for k in ("F_beta", "weighted_F_beta", "S_measure", "E_measure", "MAE")))
    con.print(t)
    c = res["challenging"]
    con.print(f"challenging setting (+{res['probe_images']} undamaged probes): mask AP {c['without_filter']['segm']['AP']:.3f}"
              f" without the filter, {c['with_filter']['segm']['AP']:.3f} with it (test only, with it: "
              f"{c['test_only_with_filter']['segm']['AP']:.3f}); probes with a detection {c['probes_with_any_detection']:.3f}"
              f" -> {c['probes_with_detection_after_filter']:.3f} after the filter")
    con.print("cross-dataset binary damage IoU: " + ", ".join(f"{k} {v:.3f}" for k, v in res["cross_dataset"].items()))
    if "parts" in res:
        con.print(f"parts mIoU on car_parts/testset ({res['parts']['weights']}): {res['parts']['miou']:.3f} "
                  f"(target >= {TARGETS['parts_miou']})")
    sp = res["speed"]
    con.print(f"decoder ms per photo (384x512, 2 threads): CarDD {sp['cardd_decoder_ms']:.1f}, replaced joint "
              f"{sp['replaced_joint_decoder_ms']:.1f} (target: adds <= {TARGETS['added_ms_per_photo']} ms)")


if __name__ == "__main__":
    main()
