"""scripts/build_stanford196.py and the make_model196 recipe on a tiny git repository laid out like
fmejbah/car_dataset1 (colours swapped, an excluded photo, a byte-identical duplicate)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from carcheck.data.recipes import build_recipe

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_stanford196.py"
COMMIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
              "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z"}


def _repo(tmp: Path, n_per_class: int = 12) -> tuple[Path, int]:
    import os

    repo = tmp / "src"
    (repo / "cars_train").mkdir(parents=True)
    names = np.empty((1, 196), dtype=object)
    for i in range(196):
        names[0, i] = np.array([f"Make{i} Model Sedan 2012"])
    names[0, 1] = np.array(["Aston Martin V8 Vantage Coupe 2012"])
    scipy.io.savemat(repo / "cars_meta.mat", {"class_names": names})
    labels, k = [], 0
    rng = np.random.default_rng(0)
    for cls in (1, 2):
        for j in range(n_per_class):
            k += 1
            arr = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
            arr[..., 0], arr[..., 2] = 30, 220  # stored swapped: looks blue, is red
            if k == 5:  # a near-duplicate of photo 4: the same picture re-encoded (other bytes, same dHash)
                arr = prev
            Image.fromarray(arr).save(repo / "cars_train" / f"{k:05d}.jpg", quality=95 if k != 5 else 80)
            prev = arr
            labels.append(cls)
    # a byte-identical duplicate of photo 1 (as photo k+1) in class 1
    k += 1
    (repo / "cars_train" / f"{k:05d}.jpg").write_bytes((repo / "cars_train" / "00001.jpg").read_bytes())
    labels.append(1)
    (repo / "train_perfect_preds.txt").write_text("\n".join(map(str, labels)) + "\n")
    env = {**os.environ, **COMMIT_ENV}
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "x"], check=True, env=env)
    return repo, k


def test_build_swaps_colours_drops_excluded_and_duplicates(tmp_path, monkeypatch):
    repo, n = _repo(tmp_path)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    script = SCRIPT.read_text().replace('COMMIT = "2ac6920297f51277ac4e24afd231c46d35077831"', f'COMMIT = "{commit}"')
    patched = tmp_path / "build.py"
    patched.write_text(script)
    excl = tmp_path / "exclude.txt"
    excl.write_text("00002.jpg\n")
    out = tmp_path / "data" / "car_models" / "stanford196"
    r = subprocess.run([sys.executable, str(patched), str(repo / ".git"), str(out), "--exclude", str(excl)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert len(files) == n - 2  # one excluded, one duplicate
    assert not any(f.endswith("/00002.jpg") for f in files)
    assert {f.split("/")[0] for f in files} == {"Make0_Model_Sedan_2012", "Aston_Martin_V8_Vantage_Coupe_2012"}
    px = np.asarray(Image.open(out / files[0])).reshape(-1, 3).mean(0)
    assert px[0] > 150 and px[2] < 80  # red again
    rows = build_recipe("make_model196", tmp_path / "data")
    assert len(rows) == n - 2 and {r.split for r in rows} == {"train", "val", "test"}
    by_name = {r.path.name: r for r in rows}
    assert by_name["00004.jpg"].group == by_name["00005.jpg"].group  # near-duplicates share a group
    assert by_name["00004.jpg"].group != by_name["00006.jpg"].group
    for g in {r.group for r in rows}:  # a near-duplicate group never straddles splits
        assert len({r.split for r in rows if r.group == g}) == 1


def test_recipe_names_the_build_script_when_the_set_is_missing(tmp_path):
    from carcheck.data.folder import FolderFormatError

    with pytest.raises(FolderFormatError, match="build_stanford196"):
        build_recipe("make_model196", tmp_path)
