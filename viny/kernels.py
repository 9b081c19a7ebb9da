"""The grid's notebook kernels: their options and ports, their niceness, and the kernel kept
warm between the grid cells one worker runs (issue #35).

A fresh kernel per cell pays, every time, for the kernel's start (1-2 s), the imports of
torch, timm, pandas and altair (about 7 s on 2 CPU cores), the chart renderer's start and
the first training step's kernel selection: 10-14 s of a demo cell's 24. A local grid worker
therefore keeps one kernel and runs its cells in it one after another (nbclient takes an
existing kernel manager, and papermill passes it through). Before each cell the kernel's
user namespace is cleared (``%reset -f``), its working folder, thread count and execution
counter set; imported modules stay, which is the point. Every random draw in viny is seeded
from the cell's parameters, so a cell's metrics do not depend on what ran before it in the
same kernel (tested against a fresh kernel). A cell that fails, times out or kills its
kernel takes the kernel with it: the next cell starts a fresh one, so one cell's failure
never leaks into another's. ``VINY_FRESH_KERNELS=1`` turns reuse off (a kernel per cell).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import socket
import tempfile
from pathlib import Path


def kernel_options() -> dict[str, str]:
    """Kernel-manager settings for the grid's kernels and ``make lab``'s: CurveZMQ transport
    encryption where pyzmq has it, so ipykernel (>= 7.3) does not warn at every kernel's start
    that its local TCP link is plain text ("auto": used where the kernelspec declares support;
    it raises where pyzmq lacks CurveZMQ, hence the check)."""
    import zmq

    return {"KernelManager.transport_encryption": "auto"} if zmq.has("curve") else {}


def lab_arguments() -> str:
    """:func:`kernel_options` as ``jupyter lab`` command-line flags (``make lab``)."""
    return " ".join(f"--{key}={value}" for key, value in kernel_options().items())


def _kernel_config():
    """:func:`kernel_options` as the traitlets config papermill's kernel manager takes."""
    from traitlets.config import Config

    config = Config()
    for key, value in kernel_options().items():
        section, name = key.split(".")
        config[section][name] = value
    config.NotebookClient.kernel_manager_class = "viny.grid.GridKernelManager"
    return config


# Kernel ports. jupyter_client picks a kernel's five ports by binding port 0 and closing the
# socket; the kernel binds them seconds later. Two grid workers starting kernels at once
# could pick the same port, and the loser printed a 25-line "ZMQError: Address already in
# use" traceback. Instead, each process claims a slot of ports of its own (an flock held while
# it lives, released by the kernel however it ends) below Linux's ephemeral range (32768-),
# where bind(0) never lands, and hands its kernels ports from that slot only.
_PORT_BASE, _PORT_SLOT_SIZE, _PORT_SLOTS = 20000, 64, 160  # ports 20000-30239
_port_slot: dict = {}  # pid -> [fd, slot, next port index]: this process's slot (a forked child claims its own)


def _port_slot_claim() -> list | None:
    held = _port_slot.get(os.getpid())
    if held:
        return held
    folder = Path(tempfile.gettempdir()) / f"viny-kernel-ports-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    for slot in range(_PORT_SLOTS):
        try:
            fd = os.open(folder / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _port_slot[os.getpid()] = held = [fd, slot, 0]
        return held
    return None


def kernel_ports(n: int = 5) -> list[int] | None:
    """``n`` free ports from this process's own slot (see above), or None (no slot free: the
    kernel manager picks, as before)."""
    held = _port_slot_claim()
    if held is None:
        return None
    _, slot, start = held
    ports = []
    for i in range(_PORT_SLOT_SIZE):
        port = _PORT_BASE + slot * _PORT_SLOT_SIZE + (start + i) % _PORT_SLOT_SIZE
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            held[2] = (start + i + 1) % _PORT_SLOT_SIZE  # the next kernel (a retry) takes the next ports
            return ports
    return None


def _with_kernel_ports(config):
    """``config`` with the kernel's ports set from :func:`kernel_ports` (and the kernel manager's
    own port picking off)."""
    ports = kernel_ports()
    if ports is None:
        return config
    config = copy.deepcopy(config)
    km = config.KernelManager
    km.cache_ports = False
    km.shell_port, km.iopub_port, km.stdin_port, km.hb_port, km.control_port = ports
    return config


FRESH_KERNELS_ENV = "VINY_FRESH_KERNELS"  # set to 1: every cell in a kernel of its own
MAX_CELLS_PER_KERNEL = 64  # then a fresh one: bounds whatever a long grid could accumulate


def reuse_wanted() -> bool:
    return os.environ.get(FRESH_KERNELS_ENV, "").strip().lower() not in {"1", "true", "yes"}


def _reset_code(cwd: str, threads: int | None) -> str:
    """What runs in a warm kernel before the next cell's notebook: an empty namespace, the
    cell's folder and thread count, and execution counts from 1 again."""
    lines = ["get_ipython().run_line_magic('reset', '-f')", "import os as _os, gc as _gc, sys as _sys", f"_os.chdir({cwd!r})"]
    if threads:
        lines += [f"_os.environ['OMP_NUM_THREADS'] = _os.environ['MKL_NUM_THREADS'] = '{threads}'",
                  f"_sys.modules['torch'].set_num_threads({threads}) if 'torch' in _sys.modules else None"]
    lines += ["_gc.collect()", "del _os, _gc, _sys", "get_ipython().execution_count = 1"]
    return "\n".join(lines)


def share_niceness(pid: int) -> None:
    """Give kernel ``pid`` this process's niceness where Linux would not. jupyter_client
    starts each kernel in a session of its own, and with autogroup scheduling (the default
    on most distributions) every session is a group that gets an equal share of the CPU
    whatever the nice values inside it: the kernels of a grid started with ``nice -n 19``
    competed at full weight with the work in the foreground (measured: a niced background
    grid's two kernels took 68 % of a core each beside a demo's workers at 31 %). The
    kernel's autogroup is given the grid's nice value (raising it needs no privilege)."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > 0:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))


class GridKernelMixin:
    """What the grid's kernel managers add to jupyter_client's (sync or async) one:

    - the kernel keeps the grid's niceness (:func:`share_niceness`);
    - no interrupt before shutdown: jupyter_client interrupts every kernel before shutting it
      down, and ipykernel logs that interrupt of an idle kernel as "ERROR | KeyboardInterrupt
      caught in kernel", a line between every two cells of `make demo`. The notebook has
      finished when its kernel is shut down, so that interrupt is skipped; a kernel that does
      not stop is still killed after the shutdown request (jupyter_client's own path)."""

    async def _async_post_start_kernel(self, **kw) -> None:
        await super()._async_post_start_kernel(**kw)
        pid = getattr(self.provisioner, "pid", None)
        if pid:
            share_niceness(pid)

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


def _warm_manager_class():
    from jupyter_client.manager import KernelManager

    class WarmKernelManager(GridKernelMixin, KernelManager):
        """A kernel manager lent to papermill, one cell at a time. nbclient leaves the kernel
        of a borrowed manager running, and its client too: the clients are tracked here and
        closed after each cell."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.lent_clients: list = []

        def client(self, **kwargs):
            kc = super().client(**kwargs)
            self.lent_clients.append(kc)
            return kc

        def close_lent_clients(self) -> None:
            while self.lent_clients:
                with contextlib.suppress(Exception):
                    self.lent_clients.pop().stop_channels()

    return WarmKernelManager


class WarmKernel:
    """One process's kept kernel: :meth:`lend` gives a running kernel manager ready for the
    next cell, :meth:`returned` takes it back (kept if the cell went well, shut down if not)."""

    def __init__(self):
        self.km = None
        self.cells = 0

    def _start(self, cwd: str, config) -> None:
        self.km = _warm_manager_class()(kernel_name="python3", config=_with_kernel_ports(config))
        self.km.start_kernel(cwd=cwd, extra_arguments=["--HistoryManager.hist_file=:memory:"])  # threads: the worker's OMP_NUM_THREADS
        self.cells = 0

    def lend(self, cwd: str, threads: int | None, config, start_timeout: float = 120):
        """A running kernel for the next cell: the kept one, reset, or a fresh one."""
        if self.km is not None and (not self.km.is_alive() or self.cells >= MAX_CELLS_PER_KERNEL):
            self.close()
        fresh = self.km is None
        if fresh:
            self._start(cwd, config)
        kc = self.km.client()
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=start_timeout)
            if not fresh:
                reply = kc.execute_interactive(_reset_code(cwd, threads), store_history=False, silent=True, timeout=60)
                if reply["content"].get("status") != "ok":
                    raise RuntimeError(f"resetting the kept kernel failed: {reply['content'].get('evalue')}")
        except Exception:
            self.close()
            raise
        finally:
            kc.stop_channels()
            if self.km is not None and kc in self.km.lent_clients:
                self.km.lent_clients.remove(kc)
        return self.km

    def returned(self, ok: bool) -> None:
        """The cell is over: keep the kernel for the next one if it went well, else end it."""
        if self.km is None:
            return
        self.km.close_lent_clients()
        self.cells += 1
        if not ok:
            self.close()

    def close(self) -> None:
        km, self.km = self.km, None
        if km is None:
            return
        km.close_lent_clients()
        with contextlib.suppress(Exception):
            km.shutdown_kernel(now=False)
        with contextlib.suppress(Exception):
            if km.has_kernel:
                km.shutdown_kernel(now=True)
        with contextlib.suppress(Exception):
            km.cleanup_resources()


_kept: dict[int, WarmKernel] = {}  # pid -> this process's kept kernel (a forked or spawned worker keeps its own)


def kept_kernel() -> WarmKernel:
    """This process's warm kernel, created on first use; shut down when the process ends
    (a pool worker through multiprocessing's finaliser, which runs where atexit does not)."""
    pid = os.getpid()
    if pid not in _kept:
        import atexit
        from multiprocessing import util

        _kept[pid] = warm = WarmKernel()
        atexit.register(warm.close)
        util.Finalize(warm, warm.close, exitpriority=100)
    return _kept[pid]


def close_kept_kernel() -> None:
    """End this process's warm kernel now (a one-job grid, when its cells are done)."""
    warm = _kept.pop(os.getpid(), None)
    if warm is not None:
        warm.close()

