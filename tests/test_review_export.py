"""Export of reviewed cases as COCO (issue 18) and its use: the exported set trains (1-epoch tiny run
of ``carcheck train segmentation``'s Python API) and evaluates (``carcheck evaluate segmentation``)
as it is."""

from __future__ import annotations

import io
import json
import zipfile

from fastapi.testclient import TestClient

from test_review_support import api_key, assessed_case, make_app


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _reviewed_case(client, key):
    case_id = assessed_case(client, key, n_findings=10)
    case = client.get(f"/v1/cases/{case_id}", headers=_h(key)).json()
    fs = case["review"]["findings"]
    client.post(f"/v1/cases/{case_id}/findings/{fs[0]['id']}/review", json={"action": "confirm"}, headers=_h(key))
    client.post(f"/v1/cases/{case_id}/findings/{fs[1]['id']}/review", json={"action": "reject"}, headers=_h(key))
    other = next(d for d in ("dent", "scratch", "broken") if d != fs[2]["damage"])
    client.post(f"/v1/cases/{case_id}/findings/{fs[2]['id']}/review", json={"action": "edit", "damage": other},
                headers=_h(key))
    for f in fs[3:]:
        if f["predicted"]["needs_review"]:
            client.post(f"/v1/cases/{case_id}/findings/{f['id']}/review", json={"action": "confirm"}, headers=_h(key))
    photo = case["photos"][4]
    r = client.post(f"/v1/cases/{case_id}/damages", headers=_h(key), json={
        "photo_id": photo["id"], "damage": "dent", "part": "hood", "bbox_xywh": [100, 100, 80, 60],
        "polygon": [100, 100, 180, 100, 140, 160]})
    assert r.status_code == 201
    assert client.post(f"/v1/cases/{case_id}/review/complete", headers=_h(key)).status_code == 200
    return case_id, case, fs, other, photo


def test_export_reviewed_trains_and_evaluates(tmp_path):
    app, settings = make_app(tmp_path)
    client = TestClient(app)
    key = api_key(app, "tenant-a")
    case_id, case, fs, other, photo = _reviewed_case(client, key)
    assessed_case(client, key, n_findings=4, external_id="not-reviewed")  # stays out of the export
    from typer.testing import CliRunner

    from carcheck.cli import app as cli

    out = tmp_path / "export"
    r = CliRunner().invoke(cli, ["export", "reviewed", "--data-dir", str(settings.data_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["dent", "scratch", "broken"]
    assert data["info"]["images"] == "privacy-blurred derivatives"
    cat = {c["id"]: c["name"] for c in data["categories"]}
    assessed = [p for p in case["report"]["photos"] if p["status"] == "assessed"]
    assert len(data["images"]) == len(assessed)
    assert all((out / im["file_name"]).is_file() for im in data["images"])
    by_finding = {}
    for a in data["annotations"]:
        by_finding.setdefault(a.get("finding"), []).append(a)
    assert fs[1]["id"] not in by_finding  # rejected: not an annotation ...
    neg = [n for n in data["negatives"] if n["finding"] == fs[1]["id"]]
    assert neg and all(cat[n["category_id"]] == fs[1]["damage"] for n in neg)  # ... but a negative
    assert {cat[a["category_id"]] for a in by_finding[fs[0]["id"]]} == {fs[0]["damage"]}
    assert {cat[a["category_id"]] for a in by_finding[fs[2]["id"]]} == {other}  # the corrected type
    assert all(a["review_state"] == "corrected" for a in by_finding[fs[2]["id"]])
    added = by_finding[None]
    assert len(added) == 1 and added[0]["review_state"] == "added" and cat[added[0]["category_id"]] == "dent"
    im = next(i for i in data["images"] if i["id"] == added[0]["image_id"])
    assert im["carcheck_photo"] == photo["id"]
    sx = im["width"] / photo["width"]
    assert abs(added[0]["bbox"][0] - 100 * sx) < 0.05 and len(added[0]["segmentation"][0]) == 6
    # a detection's box, scaled to the exported image, matches the report's
    det_photo = fs[0]
    assert all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in data["annotations"])
    # the same over the API (zip)
    r = client.get("/v1/export/coco", headers=_h(key))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    zdata = json.loads(z.read("annotations.json"))
    assert len(zdata["annotations"]) == len(data["annotations"]) and len(zdata["negatives"]) == len(data["negatives"])
    other_key = api_key(app, "tenant-b")
    assert json.loads(zipfile.ZipFile(io.BytesIO(client.get("/v1/export/coco", headers=_h(other_key)).content))
                      .read("annotations.json"))["images"] == []
    del det_photo

    # the exported set as it is: a 1-epoch tiny training, then the evaluation command
    from carcheck.data.coco import CocoSource
    from carcheck.train.segmentation import SegTrainConfig, TaskSpec, train_segmentation

    assert len(CocoSource(out / "annotations.json").images) == len(data["images"])
    cfg = SegTrainConfig(tasks=[TaskSpec("damage", "damage_type", [str(out / "annotations.json")])],
                         out=str(tmp_path / "run"), epochs=1, batch_size=2, size=64, val_fraction=0.3, threads=2)
    train_segmentation(cfg, log=lambda *a: None)
    weights = tmp_path / "run" / "best.safetensors"
    assert weights.is_file()
    r = CliRunner().invoke(cli, ["evaluate", "segmentation", str(out / "annotations.json"), "--task", "damage",
                                 "--weights", str(weights), "--longest", "128", "--json"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.output[r.output.index("{"):])
    assert "miou" in json.dumps(metrics).lower()
