"""The training engine (carcheck.train.engine): an interrupted run resumes to the same result as an
uninterrupted one, resume is explicit and refuses a changed config, metrics.jsonl never repeats an
epoch, early stopping stops where it should. Synthetic tasks and a tiny feature cache: seconds."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from carcheck.train.engine import ConfigChangedError, RunFolderError, config_changes, fit, seed_everything, start_run


@dataclass
class _Cfg:
    out: str
    lr: float = 0.05
    epochs: int = 4
    seed: int = 0
    threads: int = 2
    command: str = ""


class _Stop(Exception):
    """The simulated interruption (a killed job)."""


def _synthetic_run(out, epochs, resume=False, interrupt_at=None, patience=None, init_seed=0):
    """A tiny regression task whose every epoch draws from Python's, NumPy's and torch's global
    generators, a private ``random.Random`` and a ``torch.Generator`` (all must be restored), with
    dropout and a plateau scheduler. ``interrupt_at``: raise :class:`_Stop` after two optimiser
    steps of that epoch, as a killed process would. Returns ``(model, FitResult)``."""
    seed_everything(init_seed)  # as start_run does; a resumed run must not depend on it (weights, random states)
    x = torch.linspace(-1, 1, 64)[:, None]
    y = 3 * x + 0.5
    model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    private, gen = random.Random(1), torch.Generator().manual_seed(2)

    def train_one_epoch(epoch):
        model.train()
        order = torch.randperm(64, generator=gen)
        noise = float(np.random.normal()) * 1e-3 + random.random() * 1e-3 + private.random() * 1e-3
        total = 0.0
        for step, i in enumerate(range(0, 64, 16)):
            if epoch == interrupt_at and step == 2:
                raise _Stop
            idx = order[i:i + 16]
            jitter = torch.randn(len(idx), 1) * 0.01
            loss = torch.nn.functional.mse_loss(model(x[idx] + jitter), y[idx] + noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        return {"train_loss": total / 4}

    @torch.no_grad()
    def validate(epoch):
        model.eval()
        return {"val_loss": float(torch.nn.functional.mse_loss(model(x), y))}

    res = fit(out, model=model, optimizer=opt, scheduler=sched, train_one_epoch=train_one_epoch, validate=validate,
              epochs=epochs, monitor="val_loss", mode="min", patience=patience,
              generators={"private": private, "loader": gen}, resume=resume, log=lambda m: None)
    return model, res


def _records(out):
    """metrics.jsonl without the wall-clock field."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    straight, res_a = _synthetic_run(tmp_path / "a", 6)
    with pytest.raises(_Stop):  # killed in the middle of epoch 3 (its two steps are lost)
        _synthetic_run(tmp_path / "b", 6, interrupt_at=3)
    # a new process, here with other initial weights and global random states: resume restores them all
    resumed, res_b = _synthetic_run(tmp_path / "b", 6, resume=True, init_seed=99)
    assert res_b.resumed_at == 3 and res_b.epochs_done == 6
    for (k, va), vb in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(va, vb), k
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert (res_a.best, res_a.best_epoch) == (res_b.best, res_b.best_epoch)


def test_metrics_jsonl_has_each_epoch_once_after_resume(tmp_path):
    out = tmp_path / "run"
    _synthetic_run(out, 2)
    with open(out / "metrics.jsonl", "a") as f:  # a line written after the last checkpoint, and a cut one
        f.write(json.dumps({"epoch": 2, "train_loss": 0.0}) + "\n" + '{"epoch": 3, "tra')
    _synthetic_run(out, 4, resume=True)
    assert [r["epoch"] for r in _records(out)] == [0, 1, 2, 3]


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    losses = [1.0, 0.5, 0.49995, 0.7, 0.4, 0.3]  # epoch 2 is within min_delta of epoch 1: not better

    def run(epochs, resume=False):
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return fit(tmp_path / "run", model=model, optimizer=opt, train_one_epoch=lambda e: {},
                   validate=lambda e: {"val_loss": losses[e]}, epochs=epochs, monitor="val_loss", mode="min",
                   min_delta=1e-4, patience=2, resume=resume, log=lambda m: None)

    res = run(6)
    assert res.stopped_early and res.epochs_done == 4 and res.best_epoch == 1 and res.best == 0.5
    assert [(r["epoch"], r["best"]) for r in _records(tmp_path / "run")] == [(0, True), (1, True), (2, False), (3, False)]
    res = run(6, resume=True)  # a stopped run stays stopped: nothing is trained on resume
    assert res.stopped_early and res.epochs_done == 4 and len(_records(tmp_path / "run")) == 4


def test_max_mode_keeps_the_highest_score(tmp_path):
    scores, kept = [0.2, 0.5, 0.4, float("nan"), 0.6], []
    model = torch.nn.Linear(1, 1)
    res = fit(tmp_path / "run", model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
              train_one_epoch=lambda e: {}, validate=lambda e: {"score": scores[e]}, epochs=5, monitor="score",
              mode="max", on_best=lambda e, rec: kept.append(e), log=lambda m: None)
    assert kept == [0, 1, 4] and res.best == 0.6 and res.best_epoch == 4


def test_resume_is_explicit_and_refuses_a_changed_config(tmp_path):
    cfg = _Cfg(out=str(tmp_path / "run"))
    out = start_run(cfg)
    _synthetic_run(out, 1)
    assert (out / "last.pt").is_file()
    with pytest.raises(RunFolderError, match="--resume"):  # a folder with last.pt, no resume
        start_run(_Cfg(out=cfg.out))
    with pytest.raises(RunFolderError, match="--resume"):
        _synthetic_run(out, 2)
    with pytest.raises(ConfigChangedError) as e:
        start_run(_Cfg(out=cfg.out, lr=0.1, seed=1), resume=True)
    assert e.value.changes == ["lr: 0.05 -> 0.1", "seed: 0 -> 1"]
    assert isinstance(e.value, ValueError) and "lr: 0.05 -> 0.1" in str(e.value)
    with pytest.raises(ConfigChangedError, match="epochs: 4 -> 5"):  # epochs counts unless the trainer allows it
        start_run(_Cfg(out=cfg.out, epochs=5), resume=True)
    # command and threads may differ; the trainer may allow more (here epochs)
    start_run(_Cfg(out=cfg.out, threads=1, command="other", epochs=5), resume=True, may_differ={"command", "threads", "epochs"})
    assert json.loads((out / "config.json").read_text())["epochs"] == 5
    # a run stored before a config field existed resumes when the field keeps its default, not otherwise
    stored = json.loads((out / "config.json").read_text())
    del stored["lr"]
    (out / "config.json").write_text(json.dumps(stored))
    start_run(_Cfg(out=cfg.out, epochs=5), resume=True, may_differ={"command", "threads", "epochs"})
    (out / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ConfigChangedError, match="lr: 0.05 -> 0.1"):
        start_run(_Cfg(out=cfg.out, epochs=5, lr=0.1), resume=True, may_differ={"command", "threads", "epochs"})
    torch.set_num_threads(2)


def test_config_changes_names_nested_fields():
    old = {"tasks": [{"name": "parts", "train": ["a.json"]}], "lr": 0.1, "command": "x"}
    new = {"tasks": [{"name": "parts", "train": ["b.json"]}], "lr": 0.1, "command": "y", "precision": "fp32"}
    assert config_changes(old, new) == ['precision: "<absent>" -> "fp32"', 'tasks[0].train: ["a.json"] -> ["b.json"]']


def test_a_checkpoint_of_the_old_trainers_is_not_resumed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "opt": {}, "sched": {}, "epoch": 0, "best": 1.0}, out / "last.pt")
    with pytest.raises(RunFolderError, match="older trainer"):
        _synthetic_run(out, 2, resume=True)


# ---------------------------------------------------------------- the classifier trainer on a tiny feature cache
def _feature_set(tmp_path, n_per_class=12, dim=8):
    """A label CSV of 2 classes x ``n_per_class`` photos whose cached pooled features (views full
    and hflip) are written straight into a FeatureCache: no backbone runs."""
    from PIL import Image

    from carcheck.data.labels import LabelRow, write_label_csv
    from carcheck.models.features import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    rng = np.random.default_rng(0)
    rows = []
    for c, label in enumerate(("clean", "dirty")):
        for i in range(n_per_class):
            p = tmp_path / "photos" / f"{label}_{i}.png"
            p.parent.mkdir(exist_ok=True)
            Image.new("RGB", (8, 8)).save(p)
            for view in ("full", "hflip"):
                np.save(cache._key(p, view), (rng.normal(size=dim) + 1.5 * c).astype(np.float16))
            rows.append(LabelRow(p, label, "synthetic"))
    return write_label_csv(rows, tmp_path / "labels.csv"), str(tmp_path / "cache")


def test_classifier_trainer_resumed_equals_uninterrupted_and_cli_refuses(tmp_path):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from carcheck.cli import app
    from carcheck.train.classifier import ClassifierTrainConfig, train_classifier

    csv_path, cache = _feature_set(tmp_path)

    def cfg(out, epochs):
        return ClassifierTrainConfig(data=str(csv_path), task="dirt", out=str(tmp_path / out), epochs=epochs,
                                     patience=10, hidden=16, batch_size=8, cache_dir=cache, threads=2)

    a = train_classifier(cfg("a", 5), log=lambda m: None)
    train_classifier(cfg("b", 2), log=lambda m: None)  # "interrupted" after 2 epochs ...
    b = train_classifier(cfg("b", 5), log=lambda m: None, resume=True)  # ... resumed to 5 (epochs may grow)
    wa, wb = load_file(str(a / "best.safetensors")), load_file(str(b / "best.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _records(a) == _records(b) and [r["epoch"] for r in _records(b)] == [0, 1, 2, 3, 4]

    base = ["train", "classifier", "--data", str(csv_path), "--task", "dirt", "--out", str(b), "--epochs", "5",
            "--patience", "10", "--hidden", "16", "--batch-size", "8", "--cache-dir", cache]
    r = CliRunner().invoke(app, base)  # the folder holds last.pt: refused without --resume
    assert r.exit_code == 2 and "--resume" in r.output
    r = CliRunner().invoke(app, base + ["--resume", "--lr", "0.01"])  # a changed setting: refused, named
    assert r.exit_code == 2 and "lr: 0.001 -> 0.01" in r.output
    r = CliRunner().invoke(app, base + ["--resume"])  # same settings: nothing left to train
    assert r.exit_code == 0, r.output
    assert [x["epoch"] for x in _records(b)] == [0, 1, 2, 3, 4]
    torch.set_num_threads(2)


# ---------------------------------------------------------------- the segmentation trainer (augmentations, loaders)
def _interrupt_after_first_step(stop: str):
    """A ``track`` that lets the loop described as ``stop`` take one step, then interrupts it."""
    def track(it, description: str = "", **_):
        if description != stop:
            return it

        def gen():
            for k, item in enumerate(it):
                if k == 1:
                    raise _Stop
                yield item
        return gen()
    return track


def test_segmentation_resumed_mid_epoch_equals_uninterrupted(tmp_path):
    from test_train_eval import _tiny_coco

    from carcheck.train.segmentation import SegTrainConfig, TaskSpec, train_segmentation

    ann = _tiny_coco(tmp_path, n=7)

    def cfg(out):
        return SegTrainConfig(tasks=[TaskSpec("parts", "dsmlr_parts", [str(ann)])], out=str(tmp_path / out),
                              epochs=2, batch_size=2, size=64, val_fraction=0.3, precision="fp32")

    a = train_segmentation(cfg("a"), log=lambda *m: None)
    with pytest.raises(_Stop):  # killed after the first step of epoch 2 of 2
        train_segmentation(cfg("b"), track=_interrupt_after_first_step("epoch 2/2"), log=lambda *m: None)
    b = train_segmentation(cfg("b"), log=lambda *m: None, resume=True)
    la, lb = (torch.load(r / "last.pt", weights_only=True)["model"] for r in (a, b))
    assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)
    assert _records(a) == _records(b) and [r["epoch"] for r in _records(b)] == [0, 1]
