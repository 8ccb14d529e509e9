import pytest
import torch

from carcheck.data.images import load_image
from carcheck.models.backbone import (FEATURE_STRIDES, bf16_matches_fp32, imagenet_categories, inference_context,
                                      vehicle_class_indices)

from conftest import data_path


def _photo_tensor(path, size=224):
    x = torch.from_numpy(load_image(path)).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


def test_multiscale_features_strides_and_channels(backbone):
    x = torch.rand(1, 3, 200, 300)  # not a multiple of 32
    with inference_context(bf16=False):
        out = backbone(x, with_logits=True, with_pooled=True)
    assert backbone.channels == (24, 40, 112, 320)
    for f, s, c in zip(out.features, FEATURE_STRIDES, backbone.channels):
        assert f.shape == (1, c, -(-200 // s), -(-300 // s))
    assert out.logits.shape == (1, 1000) and out.pooled.shape == (1, 1280)


def test_car_photos_rank_a_vehicle_class_in_imagenet_top5(backbone):
    files = sorted((data_path("car_parts") / "testset" / "JPEGImages").glob("*.jpg"))[:12]
    veh = set(vehicle_class_indices())
    x = torch.cat([_photo_tensor(f) for f in files])
    with inference_context(bf16=True):
        logits = backbone(x.contiguous(memory_format=torch.channels_last), with_logits=True).logits
    top5 = logits.topk(5, dim=1).indices.tolist()
    hits = [any(i in veh for i in row) for row in top5]
    assert sum(hits) == len(files), [[imagenet_categories()[i] for i in row] for row in top5]


def test_bf16_default_path_matches_fp32_within_tolerance(backbone):
    files = sorted((data_path("car_parts") / "testset" / "JPEGImages").glob("*.jpg"))[:4]
    x = torch.cat([_photo_tensor(f, 512) for f in files])
    report = bf16_matches_fp32(backbone, x)
    assert report["ok"], report


def test_lite2_variant_builds_with_its_imagenet_weights():
    from carcheck.models.backbone import build_backbone
    bb = build_backbone("lite2")
    with inference_context(bf16=False):
        out = bb(torch.rand(1, 3, 64, 64), with_logits=True)
    assert len(out.features) == 4 and bb.channels[-1] > 300 and out.logits.shape == (1, 1000)


def test_folding_batchnorm_keeps_outputs():
    from carcheck.models.inference import DEFAULT_SEGMENTERS, load_segmenter, load_segmenters
    if not all(p.exists() for p in DEFAULT_SEGMENTERS):
        import pytest
        pytest.skip("shipped segmenter weights missing")
    x = torch.rand(1, 3, 160, 224)
    plain, fused = load_segmenter(DEFAULT_SEGMENTERS[1], fuse=False), load_segmenter(DEFAULT_SEGMENTERS[1])
    with inference_context(bf16=False):
        a, b = plain(x), fused(x)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-3), k
    composed = load_segmenters(DEFAULT_SEGMENTERS)
    assert all(m.backbone is composed.backbone for m in composed.models)  # one backbone, built once
    assert set(composed.taxonomies) == {"parts", "damage"}


def test_a_segmenter_file_names_its_backbone_variant_and_loads_on_it(tmp_path):
    """Issue 26 item 2 (backbone chosen by measurement): a model trained with --backbone lite2 states it in its
    file and loads on Lite2; it cannot be composed on the shared Lite0 pass; old files (no key) mean lite0."""
    from safetensors.torch import save_file

    from carcheck.models.backbone import EfficientNetLiteBackbone
    from carcheck.models.inference import load_segmenter
    from carcheck.models.segmentation import CarSegmenter

    torch.manual_seed(0)
    m = CarSegmenter({"damage": 7}, backbone=EfficientNetLiteBackbone("lite2", pretrained=False), channels=16)
    meta = {"heads": '{"damage": 7}', "channels": "16", "decoder": "fpn", "unfreeze": "0", "backbone": "lite2",
            "taxonomies": '{"damage": "cardd_damage"}'}
    f = tmp_path / "lite2.safetensors"
    save_file({k: v.detach().contiguous() for k, v in m.trainable_state_dict().items()}, str(f), metadata=meta)
    loaded = load_segmenter(f, fuse=False)
    assert loaded.backbone.variant == "lite2" and loaded.backbone.channels == m.backbone.channels
    with pytest.raises(ValueError, match="lite2"):
        load_segmenter(f, backbone=EfficientNetLiteBackbone("lite0", pretrained=False))
    # a file of the lite0 design without the key still loads on lite0 (every shipped file)
    m0 = CarSegmenter({"damage": 7}, backbone=EfficientNetLiteBackbone("lite0", pretrained=False), channels=16)
    f0 = tmp_path / "lite0.safetensors"
    save_file({k: v.detach().contiguous() for k, v in m0.trainable_state_dict().items()}, str(f0),
              metadata={k: v for k, v in meta.items() if k != "backbone"})
    assert load_segmenter(f0, fuse=False).backbone.variant == "lite0"
