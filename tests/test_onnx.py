"""ONNX export and the ONNX Runtime engine: outputs match torch fp32 on real photos, stale exports
are refused, the CLI exports (exit 0) and rejects a missing weights file (exit 2).

One export (without its own check, the tests compare) is shared by the module; the CLI test makes
its own with the default check. ~40 s on 2 cores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import data_path

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the ONNX engine is optional)")
pytest.importorskip("onnx", reason="onnx is not installed (needed by torch.onnx.export)")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from carcheck.models.export import export_onnx

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(out, check=False)
    return out


@pytest.fixture(scope="module")
def photos():
    """Two real photos of different aspect ratios as network inputs: a 16:9 landscape (512x288)
    and a portrait one (a car_parts photo turned 90 degrees: 512 x 430, a width no multiple of 4)."""
    from carcheck.data.images import load_image
    from carcheck.models.inference import to_input_tensor

    root = data_path("car_parts") / "testset" / "JPEGImages"
    wide = load_image(root / "te50.jpg")
    tall = np.ascontiguousarray(np.rot90(load_image(root / "car10.jpg")))
    xs = [to_input_tensor(wide), to_input_tensor(tall)]
    assert tuple(xs[0].shape[-2:]) == (288, 512) and tuple(xs[1].shape[-2:]) == (512, 430)
    return xs


@pytest.fixture(scope="module")
def torch_models():
    from carcheck.models.classifier import load_head
    from carcheck.models.export import standalone_files
    from carcheck.models.inference import load_segmenters

    return load_segmenters(), {t: load_head(p)[0] for t, p in standalone_files().items()}


def test_ort_matches_torch_fp32_on_real_photos(export_dir, photos, torch_models):
    from carcheck.models.backbone import inference_context
    from carcheck.models.onnx_runtime import load_onnx_models

    seg, nets = torch_models
    ort = load_onnx_models(export_dir)
    assert ort.backbone.variant == seg.backbone.variant
    assert ort.segmenter.taxonomies == seg.taxonomies
    assert set(ort.standalone) == set(nets) == {"make_model", "verification"}
    for x in photos:
        size = tuple(x.shape[-2:])
        with inference_context(False):
            ref = seg.backbone(x, with_logits=True, with_pooled=True)
            ref_dec = seg.decode(ref.features, size, ["parts", "damage"])
            got = ort.backbone(x, with_logits=True, with_pooled=True)
            got_dec = ort.segmenter.decode(got.features, size, ["parts", "damage"])
            ref_nets = {t: n(x) for t, n in nets.items()}
            got_nets = {t: n(x) for t, n in ort.standalone.items()}
        assert [f.shape for f in got.features] == [f.shape for f in ref.features]
        assert float(F.cosine_similarity(got.pooled, ref.pooled)) >= 0.999
        assert int(got.logits.argmax()) == int(ref.logits.argmax())
        for task in ("parts", "damage"):
            assert got_dec[task].shape == ref_dec[task].shape == (1, ref_dec[task].shape[1], *size)
            agree = float((got_dec[task].argmax(1) == ref_dec[task].argmax(1)).float().mean())
            assert agree >= 0.995, f"{task} argmax agreement {agree:.4f} at {size}"
        mm_ref, mm_got = ref_nets["make_model"], got_nets["make_model"]
        assert mm_got.shape == mm_ref.shape == (1, 196)  # the 196 Stanford Cars models
        assert int(mm_got.argmax()) == int(mm_ref.argmax())
        assert float((mm_got - mm_ref).abs().max()) < 1e-2 * max(1.0, float(mm_ref.abs().max()))
        ve_ref, ve_got = ref_nets["verification"], got_nets["verification"]
        assert ve_got.shape == ve_ref.shape == (1, 1280)
        assert float(F.cosine_similarity(ve_got, ve_ref)) >= 0.999 and float((ve_got - ve_ref).abs().max()) < 1e-3
        # without logits/pooled, as the torch backbone
        bare = ort.backbone(x)
        assert bare.logits is None and bare.pooled is None and len(bare.features) == 4


def test_image_heads_run_onnx_standalone_on_the_photo(export_dir, photos, torch_models):
    from carcheck.models.backbone import inference_context
    from carcheck.models.onnx_runtime import load_onnx_models
    from carcheck.pipeline.image_heads import ImageHeads

    seg, nets = torch_models
    ort = load_onnx_models(export_dir)
    heads = ImageHeads(seg.backbone)
    heads.replace(ort.standalone)
    assert heads.get("verification")[0] is ort.standalone["verification"]
    x = photos[0]
    with inference_context(False):
        out = seg.backbone(x, with_logits=True, with_pooled=True)
        res = heads.run(out)  # must not feed the shared pass to a model that runs on the photo
        assert "make_model" not in res.logits and res.embedding is None
        heads.run_standalone(x, res)
        ref = nets["verification"](x)[0]
    assert res.embedding is not None and float(F.cosine_similarity(res.embedding, ref, dim=0)) >= 0.999
    assert int(res.logits["make_model"].argmax()) == int(nets["make_model"](x)[0].argmax())
    with pytest.raises(KeyError, match="no installed 'nope' head"):
        heads.replace({"nope": ort.standalone["verification"]})


def test_stale_export_is_refused_naming_the_file(export_dir, tmp_path):
    from carcheck.models.onnx_runtime import ensure_onnx_models, load_onnx_models

    stale = tmp_path / "stale"
    shutil.copytree(export_dir, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    rec = manifest["sources"]["segmenter:segmenter_damage_cardd_lite0.safetensors"]
    rec["sha256"] = "0" * 64  # as if the weights had changed since the export
    (stale / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"stale ONNX export .*segmenter_damage_cardd_lite0\.safetensors changed"):
        load_onnx_models(stale)
    # the untouched export loads, and ensure_onnx_models uses it without exporting again
    logged = []
    ensure_onnx_models(folder=export_dir, log=logged.append)
    assert logged == []


def test_export_with_other_weights_is_refused(export_dir):
    from carcheck.models.inference import DEFAULT_SEGMENTERS
    from carcheck.models.onnx_runtime import load_onnx_models

    with pytest.raises(ValueError, match="segmenter_parts_lite0"):
        load_onnx_models(export_dir, segmenters=[DEFAULT_SEGMENTERS[1]])  # the export also holds the parts model
    with pytest.raises(FileNotFoundError, match="no ONNX export manifest"):
        load_onnx_models(export_dir / "nowhere")


def test_cache_dir_follows_the_weights(tmp_path):
    from carcheck.models.inference import DEFAULT_SEGMENTERS
    from carcheck.models.onnx_runtime import onnx_cache_dir

    a = onnx_cache_dir(root=tmp_path)
    assert a == onnx_cache_dir(root=tmp_path) and a.parent == tmp_path
    assert onnx_cache_dir(segmenters=[DEFAULT_SEGMENTERS[1]], root=tmp_path) != a


def test_cli_export_onnx(tmp_path):
    from typer.testing import CliRunner

    from carcheck.cli import app

    out = tmp_path / "export"
    res = CliRunner().invoke(app, ["export", "onnx", "--out", str(out), "--threads", "2"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    files = [manifest["backbone"]["file"], manifest["decoders"]["file"],
             *(s["file"] for s in manifest["standalone"].values())]
    assert sorted(files) == sorted(p.name for p in out.glob("*.onnx"))
    assert set(manifest["standalone"]) == {"make_model", "verification"}
    assert manifest["decoders"]["outputs"] == ["parts", "damage"] and manifest["opset"] >= 17
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"].values())

    res = CliRunner().invoke(app, ["export", "onnx", "--out", str(tmp_path / "x"),
                                   "--weights", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "x").exists()


def test_ensure_exports_on_first_use_into_place_and_reuses_it(tmp_path):
    """An empty cache gets a complete export renamed into place (no temporary folder left behind);
    the next call loads it without exporting again."""
    from carcheck.models.onnx_runtime import ensure_onnx_models

    folder = tmp_path / "cache" / "key"
    logged = []
    models = ensure_onnx_models(folder=folder, log=logged.append)
    assert len(logged) == 1 and (folder / "manifest.json").is_file() and models.folder == folder
    assert [p.name for p in folder.parent.iterdir()] == ["key"]
    ensure_onnx_models(folder=folder, log=logged.append)
    assert len(logged) == 1
