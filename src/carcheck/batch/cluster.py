"""``carcheck batch`` on Ray (mode ``ray``): a local Ray or an existing cluster, one actor per worker with the
models loaded once (:class:`~.run._CaseWorker`), cases handed to free actors, a dead actor's case failed with
the reason and the actor not reused. Imported only when that mode runs (:func:`~.run.run_batch`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Iterator

from .run import WORKER_START_TIMEOUT_S, CaseResult, _CaseWorker, _cores, _describe, _fail_all, default_local_workers

__all__ = ["_plan", "_run_ray"]


def _plan(workers: int | None, cores: int, default: int, node_max: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker): ``threads = max(1, cores // workers)``, at most ``node_max``."""
    w = workers or default
    t = max(1, cores // w)
    return w, (min(t, node_max) if node_max else t)


def _run_ray(todo: list[Path], out: Path, workers: int | None, threads: int | None, precision: str,
             ray_address: str | None, plan: dict) -> Iterator[CaseResult]:
    import ray
    from ray.exceptions import RayActorError

    started = False
    actors: list = []
    try:
        if ray.is_initialized():
            local = False
        elif ray_address:
            ray.init(address=ray_address, log_to_driver=False)
            started, local = True, False
        else:
            local = True
        if local:
            n_workers, n_threads = _plan(workers, _cores(), default_local_workers())
        else:  # a cluster: one worker per node by default, threads from the cluster's CPUs
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            node_cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in nodes] or [1]
            n_workers, n_threads = _plan(workers, int(ray.cluster_resources().get("CPU", 1)),
                                         max(1, len(nodes)), max(1, max(node_cpus)))
        if threads:
            n_threads = threads
        if local:  # room for every actor, even when more workers than cores were asked for
            ray.init(address="local", num_cpus=max(_cores(), n_workers * n_threads), include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
            started = True
        plan.update(workers=n_workers, threads=n_threads)
        worker_cls = ray.remote(_CaseWorker).options(num_cpus=n_threads, max_restarts=0)
        actors = [worker_cls.remote(n_threads, precision) for _ in range(n_workers)]
        starting = {a.ready.remote(): a for a in actors}
        running: dict = {}  # ref -> case folder
        owner: dict = {}  # ref -> actor
        free: list = []
        queue = deque(todo)
        t0, ever_ready, last_error = time.monotonic(), False, "no Ray worker started"
        while queue or running:
            if not (starting or running or free):
                yield from _fail_all(queue, f"no Ray worker left: {last_error}")
                return
            done, _ = ray.wait(list(running) + list(starting), num_returns=1, timeout=1.0)
            if not done:
                if not ever_ready and time.monotonic() - t0 > WORKER_START_TIMEOUT_S:
                    yield from _fail_all(queue, f"no Ray worker started within {WORKER_START_TIMEOUT_S:.0f} s")
                    return
                continue
            ref = done[0]
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    ray.get(ref)
                    free.append(actor)
                    ever_ready = True
                except Exception as e:  # the actor could not load its models
                    last_error = f"Ray worker could not start: {_describe(e)}"
            else:
                case_dir, actor = running.pop(ref), owner.pop(ref)
                try:
                    result = ray.get(ref)
                    free.append(actor)
                except RayActorError as e:  # the process died (e.g. killed for memory): not reused
                    last_error = f"Ray worker died: {_describe(e)}"
                    result = CaseResult(case_dir.name, status="failed", error=last_error)
                except Exception as e:
                    result = CaseResult(case_dir.name, status="failed", error=_describe(e))
                    free.append(actor)
                yield result
            while free and queue:
                actor, case_dir = free.pop(), queue.popleft()
                ref = actor.run.remote(str(case_dir), str(out))
                running[ref], owner[ref] = case_dir, actor
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        if started:
            ray.shutdown()
