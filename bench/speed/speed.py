"""Speed of carcheck on this machine, beside the published architectures, in ONE run (issue 13).

Measured, each on this machine and in this process unless said otherwise:

- ``per_photo``: the whole assessment of one photo (decode excluded; presence gate, backbone, both
  decoders, every image-level head, the two identity passes, fusion; what ``PhotoReport.seconds``
  counts), median over 20 held-out photos (DSMLR part testset) in 2 interleaved turns per configuration
  (``--rounds``), models loaded once, 2 threads:
  eager torch fp32, eager torch bf16 autocast (native only where the CPU has AVX512-BF16/AMX:
  the JSON says which), ONNX Runtime fp32 (and int8 where shipped).
- ``reference``: the end-to-end paper's architecture (Ma et al. 2023: a MobileNet presence
  classifier at 224 px + two DeepLabV3+/EfficientNet-B5 segmenters, parts and damage; smp,
  random weights) and CarDD's baseline Mask R-CNN R50-FPN v2 (torchvision, random weights, its
  own transform: shorter side 800 px), both fp32 with ``torch.set_flush_denormal(True)``
  (random weights otherwise produce denormals that slow a CPU down and inflate the ratio), on
  the same 20 photos, same threads.
- ``startup``: wall seconds of ``carcheck --help`` and ``carcheck --version`` (median of 5).
- ``demo``: wall seconds and peak RSS of the README's demo command (a fresh process: imports,
  model loading, the case, report writing; the ONNX export is cached beforehand and the time
  of a first run with an empty cache is reported too).
- ``batch``: photos/s of ``carcheck batch`` on 100 real photos in 10 cases: the plain loop vs
  a local Ray (fresh processes, models loaded once per worker).

Run: ``python bench/speed/speed.py`` (about 10 minutes) -> table + ``bench/results/speed.json``.
``--quick`` skips the batch and reference rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, clock, time_stats, timed, timed_each, write_results  # noqa: E402,F401

REPO = ROOT

TARGETS = {"per_photo_s": 0.20, "speedup_vs_paper": 8.0, "demo_wall_s": 6.0, "help_s": 1.0, "peak_rss_gb": 1.2,
           "batch_photos_per_s": 4.0}


def _photos(n: int = 20) -> list[Path]:
    return sorted((DATA / "car_parts/testset/JPEGImages").glob("*.jpg"))[:n]


def _median_wall(cmd: list[str], runs: int = 5, env=None) -> float:
    """Median wall seconds of ``runs`` fresh processes (no warm-up: each start is what is measured)."""
    return timed(lambda: subprocess.run(cmd, check=True, capture_output=True, env=env), runs=runs, warmup=0)["median_s"]


def _fork_wait(cmd: list[str], env=None):
    pid = os.fork()
    if pid == 0:  # the child: exec the command (its own rusage)
        if env is not None:
            os.execvpe(cmd[0], cmd, env)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


def _run_measured(cmd: list[str], env=None) -> tuple[float, float, int]:
    """(wall s, peak RSS GB of the child, exit code) of one fresh process."""
    (status, usage), wall = clock(_fork_wait, cmd, env)
    return wall, usage.ru_maxrss / 1024 ** 2, os.waitstatus_to_exitcode(status)


def _carcheck_exe() -> str:
    """The ``carcheck`` command of the interpreter running this script (its venv's bin/, found even when
    the venv is not activated), else the one on PATH."""
    beside = Path(sys.executable).parent / "carcheck"
    return str(beside) if beside.is_file() else (shutil.which("carcheck") or "carcheck")


def per_photo(configs: dict[str, tuple[str, str]], photos: list[Path], rounds: int = 2,
              report: str | None = "default") -> dict:
    """Median whole-assessment seconds per photo of each ``name -> (engine, precision)``, models loaded once.

    The configurations are timed in turns, ``rounds`` times over the same photos (each turn after 3 untimed
    warm-up photos), and each one's statistics pool its turns: a configuration measured once and last (or
    first) also measured the machine's drift (one run had two identical configurations 0.02 s apart).
    ``report``: the configuration whose report writing is timed too."""
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig

    assessors = {n: Assessor(AssessConfig(engine=e, precision=p, threads=2)) for n, (e, p) in configs.items()}
    images = {n: [(p, a.read_photo(p)) for p in photos] for n, a in assessors.items()}
    times: dict[str, list[float]] = {n: [] for n in configs}
    for _ in range(rounds):
        for n, a in assessors.items():
            outs, ts = timed_each(lambda pi: a.assess_photo(*pi), images[n], warmup=3)  # warm-up: the first 3
            for (p, _), (rep, _, _) in zip(images[n], outs):
                assert rep.status == "assessed", (p, rep.reason)
            times[n] += ts
    res = {}
    for n, a in assessors.items():
        st = time_stats(times[n], warmup=3)
        res[n] = {"engine": a.engine, "precision": a.precision, "median_s": st["median_s"], "p95_s": st["p95_s"],
                  "max_s": st["max_s"], "photos": len(photos), "rounds": rounds,
                  "round_medians_s": [statistics.median(times[n][i * len(photos):(i + 1) * len(photos)])
                                      for i in range(rounds)]}
    if report in assessors:  # report writing (privacy blur, overlays, Grad-CAM of flagged photos, HTML) per photo
        from carcheck.report.html import write_report

        a = assessors[report]
        with tempfile.TemporaryDirectory() as tmp:
            rep, visuals = a.assess(photos[:10], "speed")
            _, write_s = clock(write_report, rep, visuals, tmp, a.part_names, a.damage_names)
            res[report]["report_writing_s_per_photo"] = write_s / len(rep.photos)
    return res


def reference(photos: list[Path]) -> dict:
    """The paper's three networks and Mask R-CNN on the same photos (random weights, fp32)."""
    import segmentation_models_pytorch as smp
    import torch
    import torchvision

    from carcheck.data.images import load_image
    from carcheck.models.inference import to_input_tensor

    torch.set_flush_denormal(True)
    seg = [smp.DeepLabV3Plus(encoder_name="efficientnet-b5", encoder_weights=None, classes=c).eval() for c in (19, 4)]
    cls = torchvision.models.mobilenet_v2(weights=None, num_classes=2).eval()
    mrcnn = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                                                  num_classes=7).eval()
    xs = []
    for p in photos:
        x = to_input_tensor(load_image(p), 512).contiguous()
        h, w = x.shape[-2:]
        xs.append(torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32)))  # smp needs multiples of 32

    def paper(x):
        cls(torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False))
        for m in seg:
            m(x)

    out = {}
    with torch.inference_mode():
        for name, fn in (("paper_mobilenet_2x_deeplabv3plus_b5", paper), ("maskrcnn_r50_fpn_v2", lambda x: mrcnn([x[0]]))):
            _, ts = timed_each(fn, xs, warmup=1)
            out[name] = {"median_s": time_stats(ts, warmup=1)["median_s"], "photos": len(ts)}
    out["note"] = ("random weights, fp32, torch.set_flush_denormal(True), 2 threads; paper: MobileNetV2 at 224 px + "
                   "two DeepLabV3+/EfficientNet-B5 (19 and 4 classes) at the 512 px photo padded to /32; Mask R-CNN "
                   "with its own transform (shorter side 800 px), 7 classes (CarDD's 6 + background)")
    return out


def startup() -> dict:
    exe = _carcheck_exe()
    return {"help_s": _median_wall([exe, "--help"]), "version_s": _median_wall([exe, "--version"])}


def demo(workdir: Path) -> dict:
    """The README's second command in a fresh process (wall, peak RSS), warm ONNX cache and cold."""
    exe = _carcheck_exe()
    photos = sorted(str(p) for p in (DATA / "car_damage/coco_car_damage_lplenka/val").glob("*.jpg"))
    cmd = [exe, "assess", *photos, "--out", str(workdir / "demo"), "--case-id", "demo"]
    cold_env = dict(os.environ, XDG_CACHE_HOME=str(workdir / "empty-cache"))
    cold = _run_measured(cmd, cold_env)
    _run_measured(cmd)  # warm the default cache
    runs = [_run_measured(cmd) for _ in range(3)]
    wall = statistics.median(r[0] for r in runs)
    return {"photos": len(photos), "wall_s": wall, "peak_rss_gb": max(r[1] for r in runs),
            "exit_codes": sorted({r[2] for r in runs}), "first_run_empty_cache_wall_s": cold[0],
            "first_run_peak_rss_gb": cold[1]}


def batch(workdir: Path) -> dict:
    """``carcheck batch`` on 100 real photos in 10 cases, loop vs local Ray, fresh processes."""
    exe = _carcheck_exe()
    root = workdir / "fleet"
    files = sorted((DATA / "car_parts/trainingset/JPEGImages").glob("*.jpg"))[:100]
    for i in range(10):
        d = root / f"case{i:02d}"
        d.mkdir(parents=True)
        for f in files[i * 10:(i + 1) * 10]:
            os.symlink(f, d / f.name)
    out = {}
    for mode in ("loop", "ray"):
        dest = workdir / f"out-{mode}"
        wall, rss, code = _run_measured([exe, "batch", str(root), "--out", str(dest), "--mode", mode])
        with open(dest / "summary.csv") as f:
            ok = sum(1 for line in f if line.split(",")[5:6] == ["ok"])
        out[mode] = {"wall_s": wall, "photos_per_s": len(files) / wall, "cases_ok": ok, "exit_code": code,
                     "peak_rss_gb": rss}
    out["photos"] = len(files)
    out["note"] = "wall of the whole command (process start, model loading, Ray start-up, 10 cases with reports)"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the batch and reference rows")
    ap.add_argument("--rounds", type=int, default=2, help="turns over the photos per configuration, interleaved")
    ap.add_argument("--out", default=str(REPO / "bench/results/speed.json"))
    args = ap.parse_args()
    import torch

    from carcheck.models.runtime import bf16_native, cpu_info

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    photos = _photos()
    res: dict = {"machine": cpu_info(), "date": time.strftime("%Y-%m-%d"), "targets": TARGETS, "per_photo": {},
                 "load_average_at_start": os.getloadavg()}
    configs = {"torch_fp32": ("torch", "fp32"), "torch_bf16": ("torch", "bf16"), "onnx_fp32": ("onnx", "fp32"),
               "default": ("auto", "auto")}
    if not bf16_native():
        del configs["torch_bf16"]
        res["per_photo"]["torch_bf16"] = {"skipped": "this CPU has no native bf16; bf16 autocast measured 8-18x "
                                                     "slower than fp32 on such a CPU (issue 13)"}
    res["per_photo"].update(per_photo(configs, photos, rounds=args.rounds))
    for name in configs:
        print(name, res["per_photo"][name], flush=True)
    default_s = res["per_photo"]["default"]["median_s"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res["startup"] = startup()
        res["demo"] = demo(tmp)
        print("demo", res["demo"], flush=True)
        if not args.quick:
            res["reference"] = reference(photos)
            res["reference"]["speedup_vs_paper"] = res["reference"]["paper_mobilenet_2x_deeplabv3plus_b5"]["median_s"] / default_s
            res["reference"]["speedup_vs_maskrcnn"] = res["reference"]["maskrcnn_r50_fpn_v2"]["median_s"] / default_s
            res["batch"] = batch(tmp)
    rows = [("whole assessment per photo, default (median of 20)", f"{default_s:.3f} s", f"<= {TARGETS['per_photo_s']} s")]
    for k, v in res["per_photo"].items():
        if k != "default":
            rows.append((f"  {k}", f"{v['median_s']:.3f} s" if "median_s" in v else "skipped", ""))
    if "reference" in res:
        r = res["reference"]
        rows += [("paper's architecture (MobileNet + 2x DeepLabV3+/B5)",
                  f"{r['paper_mobilenet_2x_deeplabv3plus_b5']['median_s']:.3f} s", ""),
                 ("  speed-up of the default over it", f"{r['speedup_vs_paper']:.1f}x", f">= {TARGETS['speedup_vs_paper']}x"),
                 ("Mask R-CNN R50-FPN v2 (CarDD baseline)", f"{r['maskrcnn_r50_fpn_v2']['median_s']:.3f} s", ""),
                 ("  speed-up of the default over it", f"{r['speedup_vs_maskrcnn']:.1f}x", "")]
    rows.append(("report writing per photo (blur, overlays, HTML)",
                 f"{res['per_photo']['default']['report_writing_s_per_photo']:.3f} s", ""))
    d = res["demo"]
    rows += [("README demo, wall (9 photos + report; warm ONNX cache)", f"{d['wall_s']:.2f} s", f"<= {TARGETS['demo_wall_s']} s"),
             ("  first run with an empty cache", f"{d['first_run_empty_cache_wall_s']:.2f} s", ""),
             ("  peak RSS", f"{d['peak_rss_gb']:.2f} GB", f"<= {TARGETS['peak_rss_gb']} GB"),
             ("carcheck --help / --version", f"{res['startup']['help_s']:.2f} / {res['startup']['version_s']:.2f} s",
              f"<= {TARGETS['help_s']} s")]
    if "batch" in res:
        for mode in ("loop", "ray"):
            b = res["batch"][mode]
            rows.append((f"carcheck batch, {mode}, 100 photos in 10 cases", f"{b['photos_per_s']:.2f} photos/s",
                         f">= {TARGETS['batch_photos_per_s']}"))
    m = res["machine"]
    print(f"\nmachine: {m['cpu_model']} ({m['cpu_capability']}, native bf16: {m['bf16_native']}), torch {m['torch']}")
    w = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"{r[0]:{w}}  {r[1]:>16}  {r[2]}")
    res["load_average_at_end"] = os.getloadavg()  # other processes on these 2 cores inflate every timing
    print(f"load average at start {res['load_average_at_start']}, at end {res['load_average_at_end']}")
    write_results(args.out, res, indent=2)  # with the header: machine, date, commit, command


if __name__ == "__main__":
    main()
