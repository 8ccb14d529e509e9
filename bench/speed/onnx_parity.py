"""ONNX Runtime engine vs eager torch: parity on held-out data and per-photo latency (issue 13).

Parity, ONNX Runtime fp32 (and the int8-quantised backbone) against eager torch fp32, through the
same preprocessing (``to_input_tensor``, longer side 512 px) and the same scoring as
``evaluate_segmentation`` (logits upsampled bilinearly to the photo, argmax, pixel confusion):

- parts mIoU on car_parts/testset (85 photos), damage-type mIoU on lensor_severity's test split
  (annotations/instances_test.json, 65 photos; as bench/accuracy/segmentation.py), with pixel argmax
  agreement and max |logit difference| at network resolution; tolerance |delta mIoU| <= 0.005;
- the image-level heads on the pooled vector (presence, damage filter), argmax accuracy on their
  recipes' test splits (as bench/accuracy/classifiers.py); tolerance 0.5 points; decisions changed;
- the StandaloneNets: verification decisions at the stored threshold on the test pairs
  (vn_traffic_reid_2cam pairs.csv, both photos in test identities, as bench/accuracy/identity.py),
  which must not change, and make/model top-1 on its test split;
- max |difference| of ImageNet logits, pooled vectors and standalone outputs.

Latency: per-photo median (20 car_parts test photos at 512 px, 3 rounds, engines interleaved
photo by photo so load from other processes hits all alike), 2 threads, models loaded,
``torch.set_flush_denormal(True)``: eager fp32, eager bf16 autocast (decoders fp32 as in eval
mode; only meaningful where ``bf16_native()``), ONNX Runtime fp32 (idle threads not spinning,
the engine's default; and spinning), ONNX Runtime with the int8 backbone; for the shared pass +
both decoders and for each StandaloneNet on the 512 px photo (its resize included).

int8: onnxruntime.quantization static QDQ (per-channel int8 weights, uint8 activations, MinMax
calibration on 50 seeded-random car_parts training photos); dynamic quantisation is timed too.
The int8 backbone is kept only if every tolerance above holds for it.

Timings are preliminary (shared machine; the lead re-measures in bench/speed/speed.py).
Run: nice -n 5 python bench/speed/onnx_parity.py [--limit N] [--latency-only]
(the whole run took 33 min under a load average of 7-10 from other processes; the JSON records the
load average around each part)
Prints a table; writes bench/results/onnx_parity.json (the export goes to runs/onnx_parity/, ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, clock, write_results  # noqa: E402,F401

import numpy as np
import torch
import torch.nn.functional as F

from carcheck.data.coco_dataset import CocoSegmentationDataset
from carcheck.data.images import ImageLoadError, load_image
from carcheck.data.recipes import build_recipe
from carcheck.evaluate.metrics import confusion_matrix, miou
from carcheck.models.backbone import inference_context
from carcheck.models.classifier import SHIPPED_CLASSIFIERS, StandaloneNet, load_head
from carcheck.models.inference import load_segmenters, to_input_tensor
from carcheck.models.onnx_runtime import OnnxBackbone, OnnxSegmenter, ensure_onnx_models
from carcheck.models.runtime import bf16_native, cpu_info

WORK = ROOT / "runs" / "onnx_parity"
TOL = {"miou": 0.005, "head_accuracy": 0.005, "verification_decisions_changed": 0}


def quantize_int8(folder: Path, n_cal: int = 50) -> dict:
    """Static QDQ int8 backbone (and a dynamic one for comparison) in ``folder``; returns timings."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    files = sorted((DATA / "car_parts" / "trainingset" / "JPEGImages").glob("*.jpg"))
    cal = [files[i] for i in np.random.default_rng(0).choice(len(files), n_cal, replace=False)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(cal)

        def get_next(self):
            p = next(self.it, None)
            return None if p is None else {"x": to_input_tensor(load_image(p)).contiguous().numpy()}

    t0 = time.time()
    pre = folder / "backbone_pre.onnx"
    with contextlib.redirect_stdout(io.StringIO()):  # quant_pre_process prints its shape-inference dump
        quant_pre_process(str(folder / "backbone.onnx"), str(pre))
    quantize_static(str(pre), str(folder / "backbone_int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    t1 = time.time()
    quantize_dynamic(str(pre), str(folder / "backbone_dyn_int8.onnx"), per_channel=True, weight_type=QuantType.QInt8)
    return {"calibration_photos": n_cal, "calibration_source": "car_parts/trainingset (seeded random)",
            "static_qdq_seconds": round(t1 - t0, 1), "method": "static QDQ, per-channel int8 weights, uint8 "
            "activations, MinMax calibration (onnxruntime.quantization.quantize_static)"}


def seg_parity(engines: dict, annotations: Path, task: str, limit: int | None) -> dict:
    """mIoU per engine (first engine = reference) + agreement and max |logit diff| vs the reference."""
    seg0 = next(iter(engines.values()))
    ds = CocoSegmentationDataset([str(annotations)], seg0.taxonomies[task])
    n_cls = ds.taxonomy.num_classes + 1
    conf, agree, maxdiff, pixels, n = {}, {}, {}, 0, 0
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        try:
            image, gt, _ = ds.load(i)
        except Exception as e:  # as evaluate_segmentation: an unreadable image is skipped
            print(f"skipped: {e}")
            continue
        h, w = gt.shape
        x = to_input_tensor(image)
        size = tuple(x.shape[-2:])
        ref = None
        for name, seg in engines.items():
            with inference_context(False):
                logits = seg.decode(seg.backbone(x).features, size, [task])[task].float()
            pred = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0].argmax(0).numpy()
            conf[name] = conf.get(name, 0) + confusion_matrix(pred, gt, n_cls)
            if ref is None:
                ref = logits
                continue
            agree[name] = agree.get(name, 0) + int((logits.argmax(1) == ref.argmax(1)).sum())
            maxdiff[name] = max(maxdiff.get(name, 0.0), float((logits - ref).abs().max()))
        pixels += size[0] * size[1]
        n += 1
    first = next(iter(engines))
    out = {"images": n, "data": str(annotations.relative_to(DATA)), "task": task}
    for name in engines:
        out[name] = {"miou": round(miou(conf[name]), 4)}
        if name != first:
            out[name].update(delta_miou=round(miou(conf[name]) - miou(conf[first]), 4),
                             argmax_agreement=round(agree[name] / pixels, 5),
                             max_abs_logit_diff=round(maxdiff[name], 5))
    return out


def head_parity(backbones: dict, limit: int | None) -> dict:
    """Presence and damage-filter accuracy (argmax) per engine on their recipes' test splits."""
    heads = {t: load_head(SHIPPED_CLASSIFIERS[t]) for t in ("presence", "damaged")}
    rows = {t: [r for r in build_recipe(t, DATA) if r.split == "test"] for t in heads}
    if limit is not None:
        rows = {t: r[:limit] for t, r in rows.items()}
    paths = sorted({str(r.path) for rs in rows.values() for r in rs})
    pooled: dict[str, dict[str, torch.Tensor]] = {name: {} for name in backbones}
    imnet_diff = {name: 0.0 for name in backbones}
    pooled_diff = {name: 0.0 for name in backbones}
    unreadable = []
    first = next(iter(backbones))
    for p in paths:
        try:
            x = to_input_tensor(load_image(p))
        except ImageLoadError as e:
            unreadable.append((p, e.reason))
            continue
        ref = None
        for name, bb in backbones.items():
            with inference_context(False):
                out = bb(x, with_logits=True, with_pooled=True)
            pooled[name][p] = out.pooled[0].float()
            if ref is None:
                ref = out
                continue
            imnet_diff[name] = max(imnet_diff[name], float((out.logits - ref.logits).abs().max()))
            pooled_diff[name] = max(pooled_diff[name], float((out.pooled - ref.pooled).abs().max()))
    res = {"photos": len(paths) - len(unreadable), "unreadable": unreadable,
           "max_abs_imagenet_logit_diff": {k: round(v, 5) for k, v in imnet_diff.items() if k != first},
           "max_abs_pooled_diff": {k: round(v, 5) for k, v in pooled_diff.items() if k != first}}
    for task, (head, info) in heads.items():
        rs = [r for r in rows[task] if str(r.path) in pooled[first]]
        y = torch.tensor([info.classes.index(r.label) for r in rs])
        preds = {}
        for name in backbones:
            with torch.no_grad():
                logits = head.head(torch.stack([pooled[name][str(r.path)] for r in rs]))
            preds[name] = logits.argmax(1)
        res[task] = {"n": len(rs)}
        for name, pred in preds.items():
            acc = float((pred == y).float().mean())
            res[task][name] = {"accuracy": round(acc, 4)}
            if name != first:
                res[task][name].update(delta_accuracy=round(acc - float((preds[first] == y).float().mean()), 4),
                                       decisions_changed=int((pred != preds[first]).sum()))
    return res


def standalone_parity(nets: dict[str, dict], limit: int | None) -> dict:
    """Verification decisions on the test pairs and make/model top-1, torch fp32 vs ORT fp32."""
    res = {}
    base = DATA / "verification" / "vn_traffic_reid_2cam"
    split = {r.path.name: r.split for r in build_recipe("verification", DATA)}
    with open(base / "pairs.csv", newline="") as f:
        pairs = [p for p in csv.DictReader(f) if split[p["file_a"]] == "test" and split[p["file_b"]] == "test"]
    if limit is not None:
        pairs = pairs[:limit]
    files = sorted({p[k] for p in pairs for k in ("file_a", "file_b")})
    thr = float(load_head(SHIPPED_CLASSIFIERS["verification"])[1].threshold)
    emb = {name: {} for name in nets}
    maxdiff = 0.0
    for fname in files:
        x = to_input_tensor(load_image(base / "images" / fname))
        with inference_context(False):
            outs = {name: n["verification"](x)[0].float() for name, n in nets.items()}
        for name, e in outs.items():
            emb[name][fname] = e
        maxdiff = max(maxdiff, float((outs["ort_fp32"] - outs["torch_fp32"]).abs().max()))
    y = np.array([int(p["same_vehicle"]) for p in pairs])
    ver = {"pairs": len(pairs), "photos": len(files), "threshold": thr, "max_abs_embedding_diff": round(maxdiff, 6)}
    dec = {}
    for name in nets:
        d = StandaloneNet.distance(torch.stack([emb[name][p["file_a"]] for p in pairs]),
                                   torch.stack([emb[name][p["file_b"]] for p in pairs])).numpy()
        dec[name] = d <= thr
        ver[name] = {"accuracy": round(float((dec[name].astype(int) == y).mean()), 4)}
    ver["ort_fp32"]["decisions_changed"] = int((dec["ort_fp32"] != dec["torch_fp32"]).sum())
    res["verification"] = ver
    rows = [r for r in build_recipe("make_model", DATA) if r.split == "test"]
    if limit is not None:
        rows = rows[:limit]
    classes = load_head(SHIPPED_CLASSIFIERS["make_model"])[1].classes
    y = torch.tensor([classes.index(r.label) for r in rows])
    logits = {name: [] for name in nets}
    for r in rows:
        x = to_input_tensor(load_image(r.path))
        with inference_context(False):
            for name, n in nets.items():
                logits[name].append(n["make_model"](x)[0].float())
    mm = {"n": len(rows)}
    for name in nets:
        lg = torch.stack(logits[name])
        logits[name] = lg
        mm[name] = {"top1": round(float((lg.argmax(1) == y).float().mean()), 4)}
    mm["ort_fp32"]["top1_changed"] = int((logits["ort_fp32"].argmax(1) != logits["torch_fp32"].argmax(1)).sum())
    mm["max_abs_logit_diff"] = round(float((logits["ort_fp32"] - logits["torch_fp32"]).abs().max()), 5)
    res["make_model"] = mm
    return res


def latency(photos: list[torch.Tensor], shared: dict, standalone: dict, rounds: int = 3) -> dict:
    """Per-photo median ms of each engine (see the module docstring)."""

    def shared_fn(seg, bf16):
        def run(x):
            with inference_context(bf16):
                out, backbone_s = clock(seg.backbone, x, with_logits=True, with_pooled=True)
                _, decoders_s = clock(seg.decode, out.features, tuple(x.shape[-2:]), ["parts", "damage"])
                return backbone_s, decoders_s
        return run

    def net_fn(net, bf16):
        def run(x):
            with inference_context(bf16):
                return clock(net, x)[1], 0.0
        return run

    fns = {f"shared/{name}": shared_fn(seg, bf16) for name, (seg, bf16) in shared.items()}
    for task, engines in standalone.items():
        fns.update({f"{task}/{name}": net_fn(net, bf16) for name, (net, bf16) in engines.items()})
    for fn in fns.values():
        for _ in range(3):
            fn(photos[0])
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(rounds):
        for x in photos:
            for k, fn in fns.items():
                times[k].append(fn(x))
    out = {}
    n = len(photos)
    for k, ts in times.items():
        tot = [a + b for a, b in ts]
        # round 1 meets every photo's input size for the first time (as the assessment does: each
        # photo has its own aspect ratio); later rounds repeat sizes an engine may have cached plans for
        out[k] = {"median_ms": round(1000 * statistics.median(tot), 2),
                  "first_round_median_ms": round(1000 * statistics.median(tot[:n]), 2),
                  "first_round_max_ms": round(1000 * max(tot[:n]), 2),
                  "mean_ms": round(1000 * statistics.mean(tot), 2)}
        if k.startswith("shared/"):
            out[k].update(backbone_ms=round(1000 * statistics.median(a for a, _ in ts), 2),
                          decoders_ms=round(1000 * statistics.median(b for _, b in ts), 2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="at most N photos/pairs per data set (smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-only", action="store_true",
                    help="re-measure only the latency (e.g. on a quieter machine); parity is kept from the saved JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    t_start = time.time()
    saved = ROOT / "bench" / "results" / "onnx_parity.json"
    res: dict = {"cpu": cpu_info(), "threads": args.threads, "tolerances": TOL,
                 "note": "timings preliminary: shared machine (bench/speed/speed.py re-measures)"}
    if args.latency_only:
        res = {**json.loads(saved.read_text()), "cpu": cpu_info(), "threads": args.threads}
    res["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    t0 = time.time()
    ort = ensure_onnx_models(folder=WORK / "export", threads=args.threads, log=print)
    res["export_or_load_seconds"] = round(time.time() - t0, 1)
    if not args.latency_only or not (WORK / "export" / "backbone_int8.onnx").is_file():
        res["int8"] = quantize_int8(WORK / "export")
    int8_bb = OnnxBackbone(WORK / "export" / "backbone_int8.onnx", threads=args.threads)
    int8 = OnnxSegmenter(int8_bb, ort.segmenter.decoders)
    ort_spin = ensure_onnx_models(folder=WORK / "export", threads=args.threads, spin=True)
    seg = load_segmenters()
    nets = {t: load_head(SHIPPED_CLASSIFIERS[t])[0] for t in ort.standalone}

    engines = {"torch_fp32": seg, "ort_fp32": ort.segmenter, "ort_int8_backbone": int8}
    if not args.latency_only:
        t0 = time.time()
        res["parts"] = seg_parity(engines, DATA / "car_parts" / "testset" / "annotations.json", "parts", args.limit)
        print("parts done", flush=True)
        res["damage"] = seg_parity(engines, DATA / "car_damage" / "lensor_severity" / "annotations" /
                                   "instances_test.json", "damage", args.limit)
        print("damage done", flush=True)
        res["heads"] = head_parity({k: v.backbone for k, v in engines.items()}, args.limit)
        print("image-level heads done", flush=True)
        res["standalone"] = standalone_parity({"torch_fp32": nets, "ort_fp32": ort.standalone}, args.limit)
        res["parity_seconds"] = round(time.time() - t0, 1)
        res["parity_load_average_after"] = [round(v, 2) for v in os.getloadavg()]

    files = sorted((DATA / "car_parts" / "testset" / "JPEGImages").glob("*.jpg"))[:20]
    photos = [to_input_tensor(load_image(p)) for p in files]
    native = bf16_native()
    shared = {"torch_fp32": (seg, False), "torch_bf16_autocast": (seg, True), "ort_fp32": (ort.segmenter, False),
              "ort_fp32_spinning": (ort_spin.segmenter, False), "ort_int8_backbone": (int8, False)}
    dyn = WORK / "export" / "backbone_dyn_int8.onnx"
    standalone = {t: {"torch_fp32": (nets[t], False), "torch_bf16_autocast": (nets[t], True),
                      "ort_fp32": (ort.standalone[t], False)} for t in nets}
    t0 = time.time()
    res["latency_ms"] = latency(photos, shared, standalone)
    # dynamic int8 (ConvInteger) is far slower: timed on 5 photos only, backbone alone
    dyn_bb = OnnxBackbone(dyn, threads=args.threads)
    with torch.inference_mode():
        ts = []
        for x in photos[:5]:
            dyn_bb(x)  # warm-up at this photo's size
            ts.append(clock(dyn_bb, x, with_logits=True, with_pooled=True)[1])
    res["latency_ms"]["backbone/ort_dynamic_int8"] = {"median_ms": round(1000 * statistics.median(ts), 2),
                                                      "photos": 5}
    res["latency_seconds"] = round(time.time() - t0, 1)
    res["latency_load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    res["latency_measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
    res["latency_setup"] = {"photos": len(photos), "files": [p.name for p in files], "rounds": 3,
                            "input": "to_input_tensor, longer side 512 px", "flush_denormal": True,
                            "bf16_native": native,
                            "bf16_note": None if native else
                            "no native bf16 on this CPU: the bf16 row is not meaningful"}

    # the int8 decision: every tolerance on held-out data
    i8 = "ort_int8_backbone"
    checks = {"parts_miou": abs(res["parts"][i8]["delta_miou"]) <= TOL["miou"],
              "damage_miou": abs(res["damage"][i8]["delta_miou"]) <= TOL["miou"],
              "presence_accuracy": abs(res["heads"]["presence"][i8]["delta_accuracy"]) <= TOL["head_accuracy"],
              "damaged_accuracy": abs(res["heads"]["damaged"][i8]["delta_accuracy"]) <= TOL["head_accuracy"]}
    fp = "ort_fp32"
    fp_checks = {"parts_miou": abs(res["parts"][fp]["delta_miou"]) <= TOL["miou"],
                 "damage_miou": abs(res["damage"][fp]["delta_miou"]) <= TOL["miou"],
                 "presence_accuracy": abs(res["heads"]["presence"][fp]["delta_accuracy"]) <= TOL["head_accuracy"],
                 "damaged_accuracy": abs(res["heads"]["damaged"][fp]["delta_accuracy"]) <= TOL["head_accuracy"],
                 "verification_decisions_unchanged":
                     res["standalone"]["verification"][fp]["decisions_changed"] == 0}
    res["ort_fp32_within_tolerance"] = {"checks": fp_checks, "all": all(fp_checks.values())}
    lat = res["latency_ms"]
    speedup = lat["shared/ort_fp32"]["backbone_ms"] / lat["shared/ort_int8_backbone"]["backbone_ms"]
    within = all(checks.values())
    res["int8_kept"] = {"checks": checks, "within_tolerance": within, "backbone_speedup_vs_ort_fp32": round(speedup, 3),
                        "rule": "kept only if within every tolerance AND its backbone is >= 1.1x faster than ORT fp32",
                        "kept": within and speedup >= 1.1}
    res["total_seconds"] = round(time.time() - t_start, 1)
    report(res)
    if args.limit is None:
        saved.parent.mkdir(exist_ok=True)
        write_results(saved, res, indent=2)
        print(f"saved {saved}")


def report(res: dict) -> None:
    c = res["cpu"]
    print(f"CPU {c['cpu_model']} ({c['cpu_capability']}, bf16 native {c['bf16_native']}), {res['threads']} threads")
    print(f"\n{'parity':<44}{'torch fp32':>12}{'ORT fp32':>12}{'ORT int8 bb':>12}")
    for key, label in (("parts", "parts mIoU (car_parts test)"), ("damage", "damage mIoU (lensor test)")):
        r = res[key]
        print(f"{label + ' n=' + str(r['images']):<44}{r['torch_fp32']['miou']:>12.4f}{r['ort_fp32']['miou']:>12.4f}"
              f"{r['ort_int8_backbone']['miou']:>12.4f}")
        print(f"{'  pixel argmax agreement':<44}{'':>12}{r['ort_fp32']['argmax_agreement']:>12.5f}"
              f"{r['ort_int8_backbone']['argmax_agreement']:>12.5f}")
        print(f"{'  max |logit diff|':<44}{'':>12}{r['ort_fp32']['max_abs_logit_diff']:>12.5f}"
              f"{r['ort_int8_backbone']['max_abs_logit_diff']:>12.5f}")
    h = res["heads"]
    for task in ("presence", "damaged"):
        r = h[task]
        print(f"{task + ' accuracy n=' + str(r['n']):<44}{r['torch_fp32']['accuracy']:>12.4f}"
              f"{r['ort_fp32']['accuracy']:>12.4f}{r['ort_int8_backbone']['accuracy']:>12.4f}")
        print(f"{'  decisions changed':<44}{'':>12}{r['ort_fp32']['decisions_changed']:>12}"
              f"{r['ort_int8_backbone']['decisions_changed']:>12}")
    print(f"{'max |ImageNet logit diff|':<44}{'':>12}{h['max_abs_imagenet_logit_diff']['ort_fp32']:>12.5f}"
          f"{h['max_abs_imagenet_logit_diff']['ort_int8_backbone']:>12.5f}")
    print(f"{'max |pooled diff|':<44}{'':>12}{h['max_abs_pooled_diff']['ort_fp32']:>12.5f}"
          f"{h['max_abs_pooled_diff']['ort_int8_backbone']:>12.5f}")
    v = res["standalone"]["verification"]
    print(f"{'verification accuracy, ' + str(v['pairs']) + ' pairs':<44}{v['torch_fp32']['accuracy']:>12.4f}"
          f"{v['ort_fp32']['accuracy']:>12.4f}")
    print(f"{'  decisions changed / max |emb diff|':<44}{'':>12}{v['ort_fp32']['decisions_changed']:>12}"
          f"  {v['max_abs_embedding_diff']}")
    m = res["standalone"]["make_model"]
    print(f"{'make/model top-1 n=' + str(m['n']):<44}{m['torch_fp32']['top1']:>12.4f}{m['ort_fp32']['top1']:>12.4f}")
    print(f"{'  top-1 changed / max |logit diff|':<44}{'':>12}{m['ort_fp32']['top1_changed']:>12}"
          f"  {m['max_abs_logit_diff']}")
    print(f"\n{'latency, per-photo median (ms)':<44}{'total':>10}{'backbone':>10}{'decoders':>10}"
          f"{'1st round':>11}{'1st max':>9}{'mean':>8}")
    for k, r in res["latency_ms"].items():
        print(f"{k:<44}{r['median_ms']:>10.1f}{r.get('backbone_ms', float('nan')):>10.1f}"
              f"{r.get('decoders_ms', float('nan')):>10.1f}{r.get('first_round_median_ms', float('nan')):>11.1f}"
              f"{r.get('first_round_max_ms', float('nan')):>9.1f}{r.get('mean_ms', float('nan')):>8.1f}")
    print(f"\nORT fp32 within tolerance: {res['ort_fp32_within_tolerance']}")
    print(f"int8 backbone kept: {res['int8_kept']}")
    print(f"total {res['total_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
