"""Study (issue 26): what the damage-aware photo-type head's second opinion finds. The CarDD validation
photos (every one a damage photo) that the first photo-type head alone leaves out of the damage search are
assessed one photo per case, with the second opinion (shipped config) and without it
(``search_if_damage_aware_exterior_at_least=None``); printed: photos searched, photos with a damage finding,
and photos whose findings include one of the photo's labelled CarDD types.

Run: python bench/studies/photo_type_rescue_effect.py   (about 1 minute; writes
bench/results/photo_type_rescue_effect.json)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import RESULTS, ROOT, write_results  # noqa: E402

import torch

from carcheck.models.classifier import WEIGHTS_DIR, load_head
from carcheck.models.features import FeatureCache
from carcheck.pipeline.photo_type import decide_photo_type, probabilities_from_logits

CARDD = ROOT / "data" / "cardd" / "valid"
#: CarDD's Roboflow class order (data/cardd/data.yaml) -> carcheck's damage names
NAMES = ["crack", "dent", "glass_shatter", "lamp_broken", "scratch", "tire_flat"]


def main() -> None:
    torch.set_num_threads(2)
    t0 = time.time()
    photos = sorted((CARDD / "images").glob("*.jpg"))
    if not photos:
        raise SystemExit(f"{CARDD}: CarDD valid is not built (see ../shared/data/car_damage/cardd_roboflow)")
    head, info = load_head(WEIGHTS_DIR / "classifier_photo_type_lite0.safetensors")
    feats, ok, _ = FeatureCache(ROOT / "runs" / "feature_cache").get_many(photos, ("full",))
    with torch.no_grad():
        logits = head.head(feats[:, 0])
    left_out = [photos[i] for i, lg in zip(ok, logits)
                if not decide_photo_type(probabilities_from_logits(lg.tolist(), info.classes)).search_exterior_damage]

    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig, PhotoTypeConfig

    res = {}
    for name, second in (("first_head_only", None), ("with_damage_aware_head", 0.9)):
        a = Assessor(AssessConfig(threads=2, gradcam=False,
                                  photo_type=PhotoTypeConfig(search_if_damage_aware_exterior_at_least=second)))
        searched = found = right = 0
        for p in left_out:
            want = {NAMES[int(line.split()[0])] for line in (CARDD / "labels" / f"{p.stem}.txt").read_text().splitlines()
                    if line.strip()}
            report, _ = a.assess([p], case_id=p.stem)
            ph = report.photos[0]
            got = {d.damage for d in ph.detections}
            searched += bool(ph.photo_type and ph.photo_type.search_exterior_damage)
            found += bool(got)
            right += bool(got & want)
        res[name] = {"photos": len(left_out), "searched": searched, "with_a_damage_finding": found,
                     "with_a_labelled_type_found": right}
    print(f"{len(left_out)} of {len(photos)} CarDD valid photos left out of the search by the first head alone")
    print(f"{'rule':<26}{'searched':>10}{'with a finding':>16}{'labelled type found':>21}")
    for k, v in res.items():
        print(f"{k:<26}{v['searched']:>10}{v['with_a_damage_finding']:>16}{v['with_a_labelled_type_found']:>21}")
    write_results(RESULTS / "photo_type_rescue_effect.json",
                  {"what": __doc__.split("\n")[0], "cardd_valid_photos": len(photos), "results": res,
                   "left_out_photos": [p.name for p in left_out], "seconds": round(time.time() - t0, 1)}, indent=1)


if __name__ == "__main__":
    main()
