"""The provenance record (viny.provenance): what every grid cell and training run keeps."""

import json
import platform
import subprocess

import torch

import viny
from viny.provenance import cell_provenance, config_sha256, git_state, provenance

KEYS = {"commit", "dirty", "config_sha256", "python", "torch", "timm", "viny", "device", "cpu_model", "gpu_model", "precision", "threads"}


def test_provenance_of_a_hand_made_config():
    config = {"phase": "finetune", "lr": 1e-3, "seed": 0, "nested": {"a": 1, "b": [1, 2]}}
    rec = provenance(config, device="cpu", precision="fp32", threads=3)
    assert set(rec) == KEYS
    assert rec["device"] == "cpu" and rec["gpu_model"] is None and rec["precision"] == "fp32" and rec["threads"] == 3
    assert rec["python"] == platform.python_version() and rec["torch"] == torch.__version__ and rec["viny"] == viny.__version__
    assert rec["timm"] and rec["cpu_model"]
    json.dumps(rec)  # plain JSON values
    # the hash is stable, independent of key order, and changes with any value
    reordered = {"nested": {"b": [1, 2], "a": 1}, "seed": 0, "lr": 1e-3, "phase": "finetune"}
    assert rec["config_sha256"] == provenance(reordered, "cpu", "fp32")["config_sha256"] == config_sha256(config)
    assert len(rec["config_sha256"]) == 64 and config_sha256({**config, "seed": 1}) != rec["config_sha256"]
    assert provenance(None, "cpu")["config_sha256"] is None
    assert provenance(config, "cpu")["threads"] == torch.get_num_threads()
    # this checkout's commit and state, as git says
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=viny.__path__[0]).stdout.strip()
    assert rec["commit"] == (head or None) and rec["dirty"] in (True, False, None)


def test_git_is_read_without_failing_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == (None, None)


def test_a_cells_record_names_no_machine_path(tmp_path):
    rec = cell_provenance(tmp_path / "notebooks" / "04_finetune.py", {"seed": 0, "precision": "fp32"}, threads=2)
    assert rec["notebook"] == "notebooks/04_finetune.py" and rec["precision"] == "fp32" and rec["threads"] == 2
    assert str(tmp_path) not in json.dumps(rec) and "hostname" not in rec
    assert rec["config_sha256"] == cell_provenance("elsewhere/notebooks/04_finetune.py", {"precision": "fp32", "seed": 0})["config_sha256"]
    if not torch.cuda.is_available():  # auto resolves as the notebooks resolve it
        assert cell_provenance("notebooks/nb.py", {})["precision"] in ("fp32", "bf16")
