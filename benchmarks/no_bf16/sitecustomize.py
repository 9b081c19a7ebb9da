"""Run viny as on a CPU without bf16 units (the AVX2-only AMD EPYC Zen 3), for timing.

    PYTHONPATH=$PWD/benchmarks/no_bf16 .venv/bin/viny demo --out ~/viny-runs/demo-fp32

Every Python process started with this folder on ``PYTHONPATH`` (an absolute path: the grid's workers and
notebook kernels inherit it) sees :func:`viny.device.cpu_has_bf16` return False, so
``precision: auto`` resolves to fp32 everywhere, as it does on a CPU without bf16 units.
"""

import importlib.abc
import sys


class _NoBf16(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "viny.device":
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.cpu_has_bf16 = lambda: False

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _NoBf16())
