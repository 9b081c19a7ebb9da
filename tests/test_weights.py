import json
import os

import pytest
import timm
import torch

import viny
from viny.files import atomic_path, atomic_write_json
from viny.model import patch_tokens
from viny.simmim import SimMIM
from viny.weights import load_encoder, load_simmim, load_weights, read_metadata, save_weights


def test_encoder_roundtrip_with_metadata(tmp_path):
    m = timm.create_model("viny_test", num_classes=4).eval()
    path = save_weights(m, tmp_path / "enc.safetensors", phase="pretrain", epoch=3, metrics={"loss": 0.5})
    meta = json.loads((tmp_path / "enc.json").read_text())
    assert meta["phase"] == "pretrain" and meta["epoch"] == 3 and meta["metrics"] == {"loss": 0.5}
    assert meta["viny_version"] == viny.__version__ and meta["kind"] == "encoder"
    assert read_metadata(path) == meta
    sd, meta2 = load_weights(path)
    assert meta2 == meta and set(sd) == set(m.state_dict())
    enc = load_encoder(path).eval()  # head dropped by default
    assert enc.num_classes == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(patch_tokens(enc, x), patch_tokens(m, x))
    assert load_encoder(path, num_classes=4).num_classes == 4


def test_simmim_roundtrip_and_encoder_extraction(tmp_path):
    mim = SimMIM(timm.create_model("viny_test")).eval()
    path = save_weights(mim, tmp_path / "mim.safetensors", phase="pretrain")
    back = load_simmim(path).eval()
    x = torch.randn(2, 3, 64, 64)
    mask = mim.random_mask(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(back(x, mask)[1], mim(x, mask)[1])
        assert torch.equal(patch_tokens(load_encoder(path), x), patch_tokens(mim.encoder, x))
    with pytest.raises(ValueError, match="not a SimMIM"):
        load_simmim(save_weights(mim.encoder, tmp_path / "enc.safetensors"))


def test_bad_weight_files(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        save_weights(timm.create_model("viny_test"), tmp_path / "x.pth")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_weights(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_weights(bad)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]  # no temp file left behind
