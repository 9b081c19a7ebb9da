"""The local grid's schedule (viny.schedule): upstream runs as jobs of their own, each once;
a cell only after the jobs it needs; all cores for a task that runs alone."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from viny.schedule import UpstreamJob, run_scheduled, upstream_jobs
from viny.upstream import Upstream


def test_each_upstream_run_is_one_job_after_the_run_it_starts_from():
    here = Upstream(model="viny_test", pretrain_images=32, pretrain_source="train", pretrain_epochs=1)
    chains = {
        "a": [here.pretrained()],  # needs the pre-training only
        "b": [here.pretrained(), Upstream(**{**here.__dict__, "intermediate": "cls_intel", "intermediate_epochs": 1})],
        "c": [Upstream()],  # random init: nothing upstream
        "d": [Upstream(pretrain_images=9469), Upstream(pretrain_images=9469, intermediate="spatial")],  # shipped, then a stage
    }
    jobs, needs = upstream_jobs(list(chains), chains.get, lambda c: "/store")
    assert [(j.chain.pretrain_images, j.chain.intermediate, j.needs) for j in jobs] == [
        (32, "none", ()), (32, "cls_intel", (0,)), (9469, "spatial", ())]  # the shipped encoder is not trained: no job
    assert needs == [(0,), (0, 1), (), (2,)]
    assert upstream_jobs(["a"], chains.get, lambda c: None) == ([], [()])  # a notebook without a store trains nothing upstream


def test_cells_start_only_after_their_jobs_and_others_fill_the_workers():
    log, lock = [], threading.Lock()

    def work(name, seconds):
        with lock:
            log.append(("start", name))
        time.sleep(seconds)
        with lock:
            log.append(("end", name))
        return {"cell": name}

    jobs = [UpstreamJob(Upstream(), "/s"), UpstreamJob(Upstream(intermediate="spatial"), "/s", (0,))]
    cells = ["needs-both", "free-1", "free-2", "needs-first"]
    needs = [(0, 1), (), (), (0,)]
    threads_given = {}
    with ThreadPoolExecutor(2) as pool:
        def submit_job(job, threads):
            name = f"job{jobs.index(job)}"
            threads_given[name] = threads
            return pool.submit(work, name, 0.15)

        def submit_cell(cell, threads):
            threads_given[cell] = threads
            return pool.submit(work, cell, 0.05)

        records = run_scheduled(cells, needs, jobs, 2, submit_cell, submit_job, lambda r: r, cores=2)
    assert sorted(r["cell"] for r in records) == sorted(cells)
    order = [n for ev, n in log if ev == "start"]
    ends = [n for ev, n in log if ev == "end"]
    assert order[0] == "job0" and order[1] == "free-1"  # a free cell runs beside the first job instead of a worker waiting
    assert order.index("job1") > ends.index("job0") and order.index("needs-both") > ends.index("job1")
    assert order.index("needs-first") > ends.index("job0")
    assert threads_given["job0"] == 1  # two could run: a core each


def test_a_task_alone_gets_every_core_and_a_failed_job_lets_its_cells_report():
    jobs = [UpstreamJob(Upstream(), "/s")]
    given, errors = {}, []
    with ThreadPoolExecutor(2) as pool:
        def submit_job(job, threads):
            given["job"] = threads
            return pool.submit(lambda: (_ for _ in ()).throw(RuntimeError("boom")))

        def submit_cell(cell, threads):
            given[cell] = threads
            return pool.submit(lambda: {"cell": cell})

        records = run_scheduled(["c"], [(0,)], jobs, 2, submit_cell, submit_job, lambda r: r, cores=8,
                                on_job_error=lambda job, e: errors.append(str(e)))
    assert given == {"job": 8, "c": 8} and errors == ["boom"] and records == [{"cell": "c"}]


def test_the_grid_skips_the_interrupt_jupyter_client_sends_before_shutting_a_kernel_down():
    """`make demo` printed "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." between
    cells: jupyter_client interrupts every kernel before shutting it down."""
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    from viny.grid import GridKernelManager, _kernel_config

    assert _kernel_config().NotebookClient.kernel_manager_class == "viny.grid.GridKernelManager"
    sent = []

    async def fake_interrupt(self):
        sent.append(self.shutting_down)

    km = GridKernelManager()
    original = AsyncKernelManager._async_interrupt_kernel
    AsyncKernelManager._async_interrupt_kernel = fake_interrupt
    try:
        asyncio.run(km._async_interrupt_kernel())  # a timed-out cell: interrupted
        km.shutting_down = True
        asyncio.run(km._async_interrupt_kernel())  # shutting down: not
    finally:
        AsyncKernelManager._async_interrupt_kernel = original
    assert sent == [False]
