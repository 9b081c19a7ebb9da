"""The order a local grid runs in: upstream runs first, as their own jobs, and each cell as soon
as the upstream runs it needs are in the store.

A grid's cells share upstream runs (a pre-training, an intermediate stage; :mod:`viny.upstream`).
Run as cells, the first cell that needs one trains it while the other cells that need it
wait on its lock, holding a worker each. Here the distinct runs the cells' chains will train
are jobs of their own (an intermediate stage after the pre-training it starts from), and a
cell is started only when its jobs are done, so a waiting worker is never idle while another
cell could run. The schedule changes when work happens, never what is computed: a cell's
notebook resolves the same chains and finds them in the store.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Callable, Sequence

from viny.upstream import Upstream

__all__ = ["UpstreamJob", "upstream_jobs", "run_scheduled"]


@dataclasses.dataclass(frozen=True)
class UpstreamJob:
    """One upstream run to train (or find) in ``store``: ``chain`` resolved, after ``needs``."""

    chain: Upstream
    store: str
    needs: tuple[int, ...] = ()  # indices of the jobs this one starts from


def _trained_parts(chain: Upstream) -> list[Upstream]:
    """The chains whose last run is trained here, in order: the pre-training (when it is not
    shipped), then the intermediate stage."""
    from viny.study import INTERMEDIATE_TASKS

    default = Upstream()
    stage = {f: getattr(default, f) for f in ("intermediate_epochs", "intermediate_images", "intermediate_lr", "intermediate_weight_decay", "test_size")}
    parts = []
    if chain.pretrain_config() is not None:  # the same run whatever stage follows it
        parts.append(dataclasses.replace(chain, intermediate="none", **stage))
    if chain.intermediate != "none":
        on_intel = INTERMEDIATE_TASKS[chain.intermediate].data == "intel"  # the Pets hold-out does not concern it
        parts.append(dataclasses.replace(chain, test_size=default.test_size) if on_intel else chain)
    return parts


def upstream_jobs(cells: Sequence, chains_of: Callable[[object], list[Upstream]], store_of: Callable[[object], str | None]
                  ) -> tuple[list[UpstreamJob], list[tuple[int, ...]]]:
    """``(jobs, needs)``: the distinct upstream runs the ``cells`` will train, and for each cell
    the jobs it needs. ``chains_of(cell)`` gives a cell's chains, ``store_of(cell)`` its store
    (cells without a store train nothing upstream)."""
    jobs: list[UpstreamJob] = []
    index: dict[tuple, int] = {}
    needs: list[tuple[int, ...]] = []
    for cell in cells:
        store = store_of(cell)
        mine: list[int] = []
        for chain in chains_of(cell) if store else []:
            previous: tuple[int, ...] = ()
            for part in _trained_parts(chain):
                key = (store, part)
                if key not in index:
                    index[key] = len(jobs)
                    jobs.append(UpstreamJob(part, str(store), previous))
                mine.append(index[key])
                previous = (index[key],)
        needs.append(tuple(dict.fromkeys(mine)))
    return jobs, needs


def resolve_job(job: UpstreamJob, threads: int | None = None) -> str | None:
    """Train (or find) ``job``'s run in its store: what a worker process runs."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    return job.chain.resolve(Path(job.store), progress=False)


def run_scheduled(cells: Sequence, needs: Sequence[tuple[int, ...]], jobs: Sequence[UpstreamJob], slots: int,
                  submit_cell: Callable[[object, int], Future], submit_job: Callable[[UpstreamJob, int], Future],
                  on_cell: Callable[[dict], dict], cores: int, on_job_error: Callable[[UpstreamJob, BaseException], None] | None = None,
                  on_job_done: Callable[[UpstreamJob, float], None] | None = None) -> list[dict]:
    """Run ``jobs`` and ``cells`` on ``slots`` workers: jobs first, each once the jobs it starts
    from are done; a cell once the jobs in its ``needs`` are done; cells in their given order
    otherwise. A task started while it can be the only one running gets every core
    (``cores``), else ``cores // slots`` threads. A failed job is reported (``on_job_error``)
    and its cells run anyway: each then meets the error itself and records it as its own."""
    done_jobs: set[int] = set()
    started_jobs: set[int] = set()
    waiting_cells = list(range(len(cells)))
    running: dict[Future, tuple[str, int]] = {}
    started: dict[Future, float] = {}
    records: list[dict] = []

    def ready() -> tuple[list[int], list[int]]:
        js = [j for j, job in enumerate(jobs) if j not in started_jobs and all(d in done_jobs for d in job.needs)]
        return js, [i for i in waiting_cells if all(d in done_jobs for d in needs[i])]

    while waiting_cells or running or len(started_jobs) < len(jobs):
        while len(running) < slots:
            js, cs = ready()
            if not js and not cs:
                break
            alone = not running and len(js) + len(cs) == 1  # nothing else could run beside it now
            threads = cores if alone else max(1, cores // max(1, slots))
            if js:
                started_jobs.add(js[0])
                f = submit_job(jobs[js[0]], threads)
                running[f], started[f] = ("job", js[0]), time.perf_counter()
            else:
                waiting_cells.remove(cs[0])
                running[submit_cell(cells[cs[0]], threads)] = ("cell", cs[0])
        if not running:  # nothing can start: a job's prerequisite never finished (cannot happen with jobs in order)
            raise RuntimeError("the grid's schedule is stuck: upstream jobs wait on each other")
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for f in finished:
            kind, k = running.pop(f)
            if kind == "job":
                error = f.exception()
                if error is not None and on_job_error is not None:
                    on_job_error(jobs[k], error)
                elif error is None and on_job_done is not None:
                    on_job_done(jobs[k], time.perf_counter() - started.pop(f))
                done_jobs.add(k)
            else:
                records.append(on_cell(f.result()))
    return records
