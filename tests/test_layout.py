"""The package's structure: no import cycles among viny's modules, counting imports inside
functions too (a lazy import only hides a cycle)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "viny"


def _imports() -> dict[str, set[str]]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("viny."):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("viny.")}
        mods[name] = deps
    return mods


def test_no_import_cycles():
    mods = _imports()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(m, path):
        state[m] = 1
        for d in sorted(mods.get(m, ())):
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path + [d])
            if d in mods and d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m, [m])
    assert "viny.registry" in mods and "viny.pretrained" not in mods["viny.model"]


# the notebooks run at demo scale by default (README: why the CLI's and the notebooks'
# defaults differ); every other parameter named like a config field has the config's default
DEMO_SCALE = {"epochs", "train_size", "test_size", "split"}


def test_notebook_parameters_named_like_config_fields_default_to_the_config():
    import dataclasses

    from viny.config import make_config
    from viny.grid import notebook_defaults

    root = Path(__file__).resolve().parents[1] / "notebooks"
    for notebook, phase in (("02_simmim", "pretrain"), ("03_intermediate", "intermediate"), ("04_finetune", "finetune")):
        config = dataclasses.asdict(make_config(phase))
        defaults = notebook_defaults(root / f"{notebook}.py")
        shared = {k for k in defaults if k in config} - DEMO_SCALE
        assert {"model", "seed"} <= shared
        assert {k: defaults[k] for k in shared} == {k: config[k] for k in shared}, notebook
    assert {"lr", "weight_decay"} <= set(notebook_defaults(root / "04_finetune.py"))
