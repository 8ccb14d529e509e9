"""Build the 196-class Stanford Cars set (train split of the Krause et al. 2013 dataset) from a git copy
of github.com/fmejbah/car_dataset1 into class folders, as ``../shared/data/car_models/stanford196/README.md``
asks: red and blue swapped back, the held-out photos of ``exclude.txt`` left out, byte-identical
duplicates kept once, near-duplicates grouped so a split keeps them on one side.

Usage::

    python scripts/build_stanford196.py GIT_DIR OUT_DIR [--exclude ../shared/data/car_models/stanford196/exclude.txt]

``GIT_DIR`` is the git directory the search tool's ``fetch`` writes (``/work/.mirror/fmejbah+car_dataset1/repo``).
``OUT_DIR`` (git-ignored, e.g. ``data/car_models/stanford196``) gets ``<Make_Model_Body_Year>/NNNNN.jpg``
(long side <= 512 px, LANCZOS, JPEG quality 90: the stanford_cars_subset32 recipe), ``groups.csv``
(``file,group``: photos whose 64-bit dHash differ by <= 6 bits share a group) and ``PROVENANCE.md``.
Standard library + Pillow + scipy + imagehash; about five minutes on two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
from collections import Counter
from pathlib import Path

import imagehash
import scipy.io
from PIL import Image

REPO = "fmejbah/car_dataset1"
COMMIT = "2ac6920297f51277ac4e24afd231c46d35077831"
MAX_SIDE = 512
DHASH_MAX_BITS = 6


def _git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True).stdout


def class_folder(name: str) -> str:
    """``"Mercedes-Benz C-Class Sedan 2012"`` -> ``"Mercedes-Benz_C-Class_Sedan_2012"`` (subset32's rule)."""
    return name.strip().replace(" ", "_").replace("/", "-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("git_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--exclude", type=Path, default=Path("../shared/data/car_models/stanford196/exclude.txt"))
    a = ap.parse_args()
    out: Path = a.out_dir
    _git(a.git_dir, "cat-file", "-e", COMMIT)
    meta = scipy.io.loadmat(io.BytesIO(_git(a.git_dir, "cat-file", "-p", f"{COMMIT}:cars_meta.mat")))
    names = [str(x[0]) for x in meta["class_names"][0]]
    if len(names) != 196:
        raise SystemExit(f"cars_meta.mat has {len(names)} class names, expected 196")
    labels = [int(x) for x in _git(a.git_dir, "cat-file", "-p", f"{COMMIT}:train_perfect_preds.txt").split()]
    tree = [line.split() for line in _git(a.git_dir, "ls-tree", COMMIT, "cars_train/").decode().splitlines()]
    files = sorted((Path(t[3]).name, t[2]) for t in tree if t[3].endswith(".jpg"))
    if len(files) != len(labels):
        raise SystemExit(f"{len(files)} photos but {len(labels)} labels")
    exclude = {x.strip() for x in a.exclude.read_text().split() if x.strip()}
    seen: dict[str, str] = {}
    hashes: list[tuple[str, imagehash.ImageHash]] = []
    dropped_dup, dropped_excl = [], 0
    counts: Counter[str] = Counter()
    for (fname, blob), label in zip(files, labels):
        if fname in exclude:
            dropped_excl += 1
            continue
        data = _git(a.git_dir, "cat-file", "-p", blob)
        sha = hashlib.sha256(data).hexdigest()
        if sha in seen:
            dropped_dup.append((fname, seen[sha]))
            continue
        seen[sha] = fname
        img = Image.open(io.BytesIO(data)).convert("RGB")
        r, g, b = img.split()
        img = Image.merge("RGB", (b, g, r))  # the repository stores every photo with red and blue swapped
        if max(img.size) > MAX_SIDE:
            s = MAX_SIDE / max(img.size)
            img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)
        cls = class_folder(names[label - 1])
        (out / cls).mkdir(parents=True, exist_ok=True)
        img.save(out / cls / fname, quality=90)
        counts[cls] += 1
        hashes.append((f"{cls}/{fname}", imagehash.dhash(img, hash_size=8)))
    # near-duplicate groups (union-find over pairs within DHASH_MAX_BITS)
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    near = 0
    ints = [int(str(h), 16) for _, h in hashes]
    for i in range(len(ints)):
        for j in range(i + 1, len(ints)):
            if (ints[i] ^ ints[j]).bit_count() <= DHASH_MAX_BITS:
                near += 1
                parent[find(i)] = find(j)
    with open(out / "groups.csv", "w", encoding="utf-8") as f:
        f.write("file,group\n")
        for i, (rel, _) in enumerate(hashes):
            f.write(f"{rel},g{find(i):05d}\n")
    (out / "PROVENANCE.md").write_text(
        f"# stanford196 (built)\n\nBuilt by `python scripts/build_stanford196.py` from {REPO} @ {COMMIT}.\n"
        f"- {sum(counts.values())} photos in {len(counts)} class folders; {dropped_excl} excluded "
        f"(exclude.txt); {len(dropped_dup)} byte-identical duplicates dropped: {dropped_dup}.\n"
        f"- Red/blue swapped back; long side <= {MAX_SIDE} px (LANCZOS), JPEG quality 90.\n"
        f"- {near} photo pairs within {DHASH_MAX_BITS} bits of dHash; such photos share a group in groups.csv.\n"
        "- Licence: Stanford Cars, non-commercial research use (see the shared README).\n", encoding="utf-8")
    print(f"{sum(counts.values())} photos, {len(counts)} classes, {dropped_excl} excluded, "
          f"{len(dropped_dup)} duplicates dropped, {near} near-duplicate pairs -> {out}")


if __name__ == "__main__":
    main()
