"""The one training loop every carcheck trainer runs.

Modelled on torchvision's ``references/`` scripts: the trainer owns the task (data, model, loss,
one training epoch, one validation pass) and this module owns everything around it, the same for
every model kind:

- :func:`start_run` (first thing a trainer calls): torch threads, the command line, the run
  folder with ``config.json``, the seeds, and the resume rule: a folder that already holds
  ``last.pt`` is refused unless ``resume=True`` (CLI ``--resume``), and a resumed run must have the
  stored config except for the fields that do not change what is computed (:data:`MAY_DIFFER` plus
  what the trainer adds, e.g. ``epochs`` where the learning-rate schedule does not depend on it).
- :func:`fit`: the epochs; a checkpoint after every epoch (``last.pt``: model, optimiser,
  scheduler, epoch, best value and epoch, early-stopping counter, the RNG states of Python, NumPy
  and torch and of any generator the trainer hands in), written atomically; best-on-validation
  (the trainer's ``on_best`` callback writes its own best file); early stopping after ``patience``
  epochs without improvement; ``metrics.jsonl``, one JSON line per epoch.

Resuming restores every random state, so a run interrupted after any epoch and resumed ends with
the same weights and metrics as an uninterrupted run (``tests/test_engine.py``); an interruption
inside an epoch loses only that epoch, whose partial line (if any) is cut from ``metrics.jsonl``.

Files in a run folder: ``config.json`` (the config, with ``precision_resolved``), ``last.pt``
(local resume state), ``metrics.jsonl`` and the trainer's best file(s).
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np
import torch

__all__ = ["MAY_DIFFER", "RunFolderError", "ConfigChangedError", "FitResult", "seed_everything", "config_state",
           "config_changes", "start_run", "fit"]

#: Config fields a resumed run may change: they do not change what the trainer computes.
#: ``command`` (how it was started), ``out`` (where the folder is), ``cache_dir`` (where cached
#: features live, not what they are), ``threads`` (torch intra-op threads: may move float
#: rounding in the last digits, not the recipe). A trainer adds its own (``epochs`` where the
#: schedule does not depend on it) or removes one (``threads`` where it sets data-loader workers).
MAY_DIFFER = frozenset({"command", "out", "cache_dir", "threads"})

#: Version of the ``last.pt`` layout; a checkpoint without it (written by the trainers before this
#: engine, without RNG states) is refused rather than resumed inexactly.
CHECKPOINT_VERSION = 1


class RunFolderError(ValueError):
    """A run folder cannot be (re)used as asked: it holds ``last.pt`` and ``resume`` was not set, or
    its ``last.pt`` / ``config.json`` cannot be resumed. The message names the folder and the way out."""


class ConfigChangedError(ValueError):
    """``resume=True`` with a config that differs from the stored one in fields that change the result.

    Attributes:
        changes: one ``"field: stored -> new"`` string per changed field (dotted paths for nested
            fields, e.g. ``tasks[0].train``).
    """

    def __init__(self, folder: Path, changes: list[str]) -> None:
        self.changes = changes
        super().__init__(f"{folder}: cannot resume, the config differs from the stored config.json in "
                         f"{len(changes)} field(s) that change the result: " + "; ".join(changes)
                         + " (use the stored values, or a new --out folder)")


@dataclass
class FitResult:
    """What :func:`fit` ran.

    Attributes:
        best: best monitored value (``inf`` / ``-inf`` if no epoch ever improved).
        best_epoch: epoch (0-based) of ``best``; None if none improved.
        epochs_done: epochs finished in the folder, this call and any before it.
        stopped_early: early stopping ended the run (now or in the run that was resumed).
        resumed_at: first epoch this call trained (0 for a fresh run).
    """

    best: float
    best_epoch: int | None
    epochs_done: int
    stopped_early: bool
    resumed_at: int


class _Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, /) -> Any: ...


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators (all CUDA devices too) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def config_state(cfg) -> dict:
    """The dataclass ``cfg`` as stored in ``config.json``: ``asdict`` (nested dataclasses too) plus
    ``precision_resolved`` (the precision ``auto`` resolves to on this hardware and device, when the
    config has ``precision``), round-tripped through JSON so it compares equal to the file's."""
    state = asdict(cfg)
    if "precision" in state:
        from ..models.runtime import resolve_precision

        state["precision_resolved"] = resolve_precision(cfg.precision, getattr(cfg, "device", "cpu"))
    return json.loads(json.dumps(state))


def _flatten(value, prefix: str, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
        out[f"{prefix}#len"] = len(value)
    else:
        out[prefix] = value
    return out


def config_changes(stored: Mapping, new: Mapping, may_differ: Iterable[str] = MAY_DIFFER) -> list[str]:
    """Fields of ``new`` that differ from ``stored`` (both :func:`config_state` dicts), except the
    top-level fields named in ``may_differ``.

    Returns:
        sorted ``"field: stored -> new"`` strings; a field missing on one side shows ``<absent>``.
        Nested fields are named by path (``tasks[0].train``, ``tasks#len`` for a list's length).
    """
    skip = set(may_differ)
    a = _flatten({k: v for k, v in stored.items() if k not in skip}, "", {})
    b = _flatten({k: v for k, v in new.items() if k not in skip}, "", {})
    absent = "<absent>"
    return [f"{k}: {json.dumps(a.get(k, absent))} -> {json.dumps(b.get(k, absent))}"
            for k in sorted(set(a) | set(b)) if a.get(k, absent) != b.get(k, absent)]


def start_run(cfg, resume: bool = False, may_differ: Iterable[str] = MAY_DIFFER) -> Path:
    """Open the run folder ``cfg.out`` for a trainer, before it loads any data.

    Sets ``cfg.threads`` torch threads, records the command line in ``cfg.command`` (when the config
    has that field and it is empty), applies the resume rule, writes ``config.json``
    (:func:`config_state`) and seeds everything with ``cfg.seed``.

    Resume rule: a folder holding ``last.pt`` is continued only with ``resume=True``, and only when
    the stored ``config.json`` equals the new config in every field not in ``may_differ``; a field the
    stored file lacks (added to the config after the run started) counts as its dataclass default. With
    ``resume=True`` and no ``last.pt`` the run starts fresh.

    Args:
        cfg: a trainer's config dataclass (fields ``out``, ``seed``, ``threads``; optionally
            ``command``, ``precision``, ``device``).
        resume: continue the run in ``cfg.out`` from its ``last.pt``.
        may_differ: top-level config fields a resumed run may change (default :data:`MAY_DIFFER`).
    Returns:
        the run folder.
    Raises:
        RunFolderError: ``last.pt`` exists and ``resume`` is False; or ``resume`` and ``last.pt``
            exists but ``config.json`` is missing or unreadable.
        ConfigChangedError: ``resume`` with changed result-relevant fields (all of them listed).
    """
    torch.set_num_threads(cfg.threads)
    if hasattr(cfg, "command"):
        cfg.command = cfg.command or " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    out = Path(cfg.out)
    state = config_state(cfg)
    last = out / "last.pt"
    if last.is_file():
        if not resume:
            raise RunFolderError(f"{out} already holds a run (last.pt): pass --resume (resume=True) to continue "
                                 f"it with the same config, or choose another --out folder")
        try:
            stored = json.loads((out / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunFolderError(f"{out}: cannot resume, config.json is missing or unreadable ({e})") from None
        # a field added to the config after this run started: the run computed what its default computes
        # (new fields default to the old behaviour), so the stored config counts as holding the default
        added = {f.name: f.default for f in fields(cfg) if f.name not in stored and f.default is not MISSING}
        stored = {**json.loads(json.dumps(added)), **stored}
        changes = config_changes(stored, state, may_differ)
        if changes:
            raise ConfigChangedError(out, changes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(state, indent=2))
    seed_everything(cfg.seed)
    return out


# ---------------------------------------------------------------- random states

def _rng_state(generators: Mapping[str, Any]) -> dict:
    np_state = list(np.random.get_state())
    np_state[1] = np_state[1].tolist()
    st = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state(),
          "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [], "generators": {}}
    for name, g in generators.items():
        if isinstance(g, random.Random):
            st["generators"][name] = g.getstate()
        elif isinstance(g, np.random.Generator):
            st["generators"][name] = g.bit_generator.state
        elif isinstance(g, torch.Generator):
            st["generators"][name] = g.get_state()
        else:
            raise TypeError(f"generator {name!r}: {type(g).__name__} is not random.Random, "
                            f"numpy.random.Generator or torch.Generator")
    return st


def _set_rng_state(st: dict, generators: Mapping[str, Any]) -> None:
    v, s, gauss = st["python"]
    random.setstate((v, tuple(s), gauss))
    n = st["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(st["torch"])
    if st["cuda"] and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])
    for name, g in generators.items():
        if name not in st["generators"]:
            raise RunFolderError(f"last.pt holds no state of the generator {name!r}")
        gs = st["generators"][name]
        if isinstance(g, random.Random):
            g.setstate((gs[0], tuple(gs[1]), gs[2]))
        elif isinstance(g, np.random.Generator):
            g.bit_generator.state = gs
        else:
            g.set_state(gs)


# ---------------------------------------------------------------- the loop

def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return json.dumps(v, default=float)
    return str(v)


def _truncate_metrics(path: Path, start: int) -> None:
    """Keep the lines of epochs < ``start`` (all of them when resuming: none is duplicated)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["epoch"]) < start:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut by an interruption
    path.write_text("".join(f"{line}\n" for line in keep))


def fit(out: str | Path, *, model: _Stateful, optimizer: torch.optim.Optimizer,
        train_one_epoch: Callable[[int], Mapping[str, Any]], validate: Callable[[int], Mapping[str, Any]],
        epochs: int, monitor: str, mode: str = "min", min_delta: float = 0.0, patience: int | None = None,
        scheduler=None, on_best: Callable[[int, dict], None] | None = None,
        generators: Mapping[str, Any] | None = None, resume: bool = False,
        log: Callable[[str], None] = print) -> FitResult:
    """Run epochs ``[start, epochs)`` of a training run in the folder ``out`` (opened by :func:`start_run`).

    Per epoch: ``train_one_epoch(epoch)`` (the trainer's batches, optimiser steps and any per-step
    scheduler steps; returns metrics such as ``{"train_loss": ...}``), ``validate(epoch)`` (returns
    metrics including ``monitor``), a ``ReduceLROnPlateau`` ``scheduler`` stepped on the monitored
    value, the improvement test, ``on_best(epoch, record)`` when it improved, one line
    ``{"epoch", **train, **val, "lr", "seconds", "best"}`` appended to ``metrics.jsonl``, then
    ``last.pt``; early stopping after ``patience`` epochs in a row without improvement.

    Args:
        out: the run folder.
        model: what is trained (``state_dict`` / ``load_state_dict``; e.g. only a segmenter's
            decoder and heads).
        optimizer / scheduler: checkpointed; any scheduler other than ``ReduceLROnPlateau`` is
            stepped by the trainer.
        train_one_epoch / validate: the task's two steps (``validate`` runs under ``torch.no_grad``
            only if the trainer says so).
        epochs: total number of epochs of the run.
        monitor: key of ``validate``'s result that selects the best epoch.
        mode: ``min`` (a loss; improved when ``value < best - min_delta``) or ``max`` (a score;
            improved when ``value > best + min_delta``). NaN never improves.
        patience: stop after this many epochs without improvement (None: never).
        on_best: called with the epoch and its record when the monitored value improved (the
            trainer writes its best weights).
        generators: extra random generators of the trainer (``random.Random``,
            ``numpy.random.Generator``, ``torch.Generator``: a data loader's, an augmentation's)
            checkpointed and restored by name beside the global ones.
        resume: continue from ``out/last.pt`` (what :func:`start_run` allowed).
        log: progress lines.
    Returns:
        :class:`FitResult`.
    Raises:
        RunFolderError: ``last.pt`` exists without ``resume``, or it was written by an older trainer.
        ValueError: unknown ``mode``, or ``validate`` did not return ``monitor``.
        KeyError / RuntimeError: from ``load_state_dict`` when ``last.pt`` does not fit the model.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"unknown mode {mode!r}; use min or max")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generators = dict(generators or {})
    last, metrics = out / "last.pt", out / "metrics.jsonl"
    sign = 1.0 if mode == "min" else -1.0  # compare sign * value: smaller is better
    start, best, best_epoch, bad_epochs = 0, math.inf * sign, None, 0
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if last.is_file():
        if not resume:
            raise RunFolderError(f"{out} already holds a run (last.pt): pass --resume (resume=True) to continue it")
        st = torch.load(last, map_location="cpu", weights_only=True)
        if st.get("engine") != CHECKPOINT_VERSION:
            raise RunFolderError(f"{last} was written by an older trainer without its random states and cannot be "
                                 f"resumed exactly; start a new --out folder")
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(st["scheduler"])
        start, best, best_epoch, bad_epochs = st["epoch"] + 1, st["best"], st["best_epoch"], st["bad_epochs"]
        _set_rng_state(st["rng"], generators)
        log(f"resumed from {last} at epoch {start}")
    _truncate_metrics(metrics, start)
    stopped = patience is not None and bad_epochs >= patience
    if stopped:
        log(f"the run already stopped early at epoch {start - 1}: nothing to train")
    epoch = start
    while not stopped and epoch < epochs:
        t0 = time.perf_counter()
        rec_train = dict(train_one_epoch(epoch))
        rec_val = dict(validate(epoch))
        if monitor not in rec_val:
            raise ValueError(f"validate returned no {monitor!r} (got {sorted(rec_val)})")
        value = float(rec_val[monitor])
        if plateau:
            scheduler.step(value)
        improved = sign * value < sign * best - min_delta  # False for NaN
        if improved:
            best, best_epoch, bad_epochs = value, epoch, 0
        else:
            bad_epochs += 1
        rec = {"epoch": epoch, **rec_train, **rec_val, "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - t0, 2), "best": improved}
        if improved and on_best is not None:
            on_best(epoch, rec)
        with open(metrics, "a") as f:
            f.write(json.dumps(rec) + "\n")
        tmp = last.with_suffix(".pt.tmp")
        torch.save({"engine": CHECKPOINT_VERSION, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None, "epoch": epoch,
                    "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                    "rng": _rng_state(generators)}, tmp)
        tmp.replace(last)
        log(f"epoch {epoch + 1}/{epochs}: " + " ".join(f"{k} {_fmt(v)}" for k, v in rec.items() if k != "epoch"))
        epoch += 1
        if patience is not None and bad_epochs >= patience:
            stopped = True
            log(f"early stop at epoch {epoch - 1}: no better {monitor} for {patience} epochs")
    return FitResult(best=best, best_epoch=best_epoch, epochs_done=epoch, stopped_early=stopped, resumed_at=start)
