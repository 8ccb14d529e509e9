"""Precision chosen by the hardware, threads, and a command line that starts without torch."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from carcheck.cli import app
from carcheck.models import runtime

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    """These tests check what "auto" means without the operator's environment overrides."""
    monkeypatch.delenv("CARCHECK_PRECISION", raising=False)
    monkeypatch.delenv("CARCHECK_ENGINE", raising=False)


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU does / does not run bf16 natively."""

    def set_native(value: bool):
        monkeypatch.setattr(runtime, "bf16_native", lambda: value)

    return set_native


def test_auto_uses_bf16_only_where_the_cpu_runs_it_natively(native):
    native(False)
    assert runtime.resolve_precision("auto") == "fp32"
    assert runtime.use_bf16("auto") is False
    assert runtime.resolve_precision("auto", "cuda:0") == "bf16"  # CUDA always has bf16 paths
    native(True)
    assert runtime.resolve_precision("auto") == "bf16"


def test_an_explicit_precision_is_honoured_and_an_unknown_one_refused(native):
    native(False)
    assert runtime.resolve_precision("bf16") == "bf16"
    native(True)
    assert runtime.resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        runtime.resolve_precision("fp16")


def test_bf16_native_reads_torchs_cpu_capability(monkeypatch):
    import torch

    runtime.bf16_native.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert runtime.bf16_native() is False
    runtime.bf16_native.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert runtime.bf16_native() is True
    runtime.bf16_native.cache_clear()


def test_inference_context_follows_auto(native):
    import torch

    from carcheck.models.backbone import inference_context

    for value in (False, True):
        native(value)
        with inference_context():
            assert torch.is_autocast_enabled("cpu") is value


def test_feature_cache_is_keyed_by_the_resolved_precision(tmp_path, native):
    from carcheck.models.features import FeatureCache

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"not read: only the key is computed")
    native(False)
    auto_fp32 = FeatureCache(tmp_path / "c", precision="auto")
    fp32 = FeatureCache(tmp_path / "c", precision="fp32")
    bf16 = FeatureCache(tmp_path / "c", precision="bf16")
    assert auto_fp32.precision == "fp32" and auto_fp32._key(photo, "full") == fp32._key(photo, "full")
    assert fp32._key(photo, "full") != bf16._key(photo, "full")


def test_set_threads_sets_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        assert runtime.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_rejects_an_unknown_precision_with_usage_error(tmp_path):
    for args in (["assess", str(tmp_path), "--out", str(tmp_path / "o"), "--precision", "fp16"],
                 ["evaluate", "classifier", "h.safetensors", "d.csv", "--precision", "half"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert not (tmp_path / "o").exists()


def test_help_and_version_do_not_import_torch():
    code = ("import sys; from carcheck.cli import app; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--version']); "
            "print(r.exit_code, r.output.strip(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    from carcheck import __version__

    assert out == ["0", "carcheck", __version__, "False"]


def test_cli_loss_list_matches_the_trainers():
    from carcheck.cli.train import SEG_LOSSES
    from carcheck.train.losses import LOSSES

    assert set(SEG_LOSSES) == set(LOSSES)


def test_engine_auto_is_onnx_for_fp32_and_torch_for_bf16(monkeypatch):
    import builtins

    assert runtime.resolve_engine("auto", "fp32") == "onnx"
    assert runtime.resolve_engine("auto", "bf16") == "torch"
    assert runtime.resolve_engine("torch", "fp32") == "torch"
    with pytest.raises(ValueError, match="fp32"):
        runtime.resolve_engine("onnx", "bf16")
    with pytest.raises(ValueError, match="unknown engine"):
        runtime.resolve_engine("tensorrt", "fp32")
    real_import = builtins.__import__

    def no_ort(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    assert runtime.resolve_engine("auto", "fp32") == "torch"  # without onnxruntime, torch
    with pytest.raises(ValueError, match="onnxruntime"):
        runtime.resolve_engine("onnx", "fp32")


def test_environment_sets_what_auto_means(monkeypatch, native):
    native(True)
    monkeypatch.setenv("CARCHECK_PRECISION", "fp32")
    assert runtime.resolve_precision("auto") == "fp32" and runtime.resolve_precision("bf16") == "bf16"
    monkeypatch.setenv("CARCHECK_ENGINE", "torch")
    assert runtime.resolve_engine("auto", "fp32") == "torch" and runtime.resolve_engine("onnx", "fp32") == "onnx"


def test_an_explicit_onnx_engine_makes_auto_precision_fp32(monkeypatch, native):
    native(True)  # a CPU where auto precision alone would mean bf16 (and torch)
    with monkeypatch.context() as m:
        m.setattr(runtime, "_have_onnxruntime", lambda: False)
        assert runtime.resolve_runtime("auto", "auto") == ("bf16", "torch")  # without onnxruntime
    assert runtime.resolve_runtime("auto", "onnx") == ("fp32", "onnx")
    monkeypatch.setenv("CARCHECK_ENGINE", "onnx")
    assert runtime.resolve_runtime("auto", "auto") == ("fp32", "onnx")
    with pytest.raises(ValueError, match="fp32"):
        runtime.resolve_runtime("bf16", "onnx")


def test_the_assessment_runs_onnx_fp32_by_default_wherever_onnxruntime_is_installed(monkeypatch, native):
    """Measured never slower than torch bf16 (runtime.resolve_runtime's doc): auto / auto is fp32 on ONNX Runtime,
    also on a CPU with native bf16; an explicit choice, an operator's override or CUDA keep torch."""
    pytest.importorskip("onnxruntime")
    for value in (True, False):
        native(value)
        assert runtime.resolve_runtime("auto", "auto") == ("fp32", "onnx")
    native(True)
    assert runtime.resolve_runtime("bf16", "auto") == ("bf16", "torch")
    assert runtime.resolve_runtime("auto", "torch") == ("bf16", "torch")
    assert runtime.resolve_runtime("auto", "auto", "cuda:0") == ("bf16", "torch")
    monkeypatch.setenv("CARCHECK_ENGINE", "torch")
    assert runtime.resolve_runtime("auto", "auto") == ("bf16", "torch")
    monkeypatch.delenv("CARCHECK_ENGINE")
    monkeypatch.setenv("CARCHECK_PRECISION", "bf16")
    assert runtime.resolve_runtime("auto", "auto") == ("bf16", "torch")
