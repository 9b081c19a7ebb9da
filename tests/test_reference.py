import pytest
import torch
from reference_oracle import authors_state_dict, oracle_patch_tokens, oracle_simmim_pred, oracle_vit

from viny.model import ViNy, patch_tokens
from viny.reference import ReferenceCheckpointError, load_reference_checkpoint
from viny.simmim import SimMIM


def test_encoder_checkpoint_matches_the_authors_model(tmp_path):
    vit = oracle_vit(num_classes=2).eval()
    sd = authors_state_dict(vit, with_head=True)
    path = tmp_path / "encoder_vit_4M_pretrain_200K.pth"
    torch.save(sd, path)
    m = load_reference_checkpoint(path).eval()
    assert isinstance(m, ViNy) and m.num_classes == 2
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(m(x), vit(x), atol=1e-5, rtol=1e-4)
        assert torch.allclose(patch_tokens(m, x), oracle_patch_tokens(vit, x), atol=1e-5, rtol=1e-4)


def test_encoder_checkpoint_without_head():
    vit = oracle_vit().eval()
    m = load_reference_checkpoint(authors_state_dict(vit, with_head=False))
    assert m.num_classes == 0 and sum(p.numel() for p in m.parameters()) == 4_842_880


def test_mim_checkpoint_reconstructions_match(tmp_path):
    vit = oracle_vit().eval()
    sd = {"encoder." + k: v for k, v in authors_state_dict(vit, with_head=False).items()}
    mask_token, decoder = torch.randn(128), torch.nn.Linear(128, 768)
    sd.update({"mask_token": mask_token, "decoder.weight": decoder.weight.detach(), "decoder.bias": decoder.bias.detach()})
    path = tmp_path / "mim_vit_4M_pretrain_200K.pth"
    torch.save(sd, path)
    mim = load_reference_checkpoint(path).eval()
    assert isinstance(mim, SimMIM)
    x = torch.randn(2, 3, 128, 128)
    mask = mim.random_mask(2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, pred, _ = mim(x, mask=mask)
        expected = oracle_simmim_pred(vit, mask_token, decoder, x, mask)
    assert torch.allclose(pred[mask], expected, atol=1e-5, rtol=1e-4)


def test_truncated_state_dict_names_missing_keys():
    sd = authors_state_dict(oracle_vit(), with_head=False)
    del sd["transformer.layers.3.1.network.4.weight"]
    sd["transformer.layers.3.1.extra.weight"] = torch.zeros(1)
    with pytest.raises(ReferenceCheckpointError) as e:
        load_reference_checkpoint(sd)
    # the file's own name of the missing key, not viny's internal one
    assert "missing keys: ['transformer.layers.3.1.network.4.weight']" in str(e.value) and "transformer.layers.3.1.extra.weight" in str(e.value)


def test_wrong_shapes_are_named():
    sd = authors_state_dict(oracle_vit(), with_head=False)
    sd["transformer.layers.0.1.network.1.bias"] = torch.zeros(7)
    with pytest.raises(ReferenceCheckpointError, match=r"transformer.layers.0.1.network.1.bias \(7,\) vs \(512,\)"):
        load_reference_checkpoint(sd)


def test_not_a_reference_checkpoint():
    with pytest.raises(ReferenceCheckpointError, match="pos_embed"):
        load_reference_checkpoint({"weight": torch.zeros(3)})


def test_corrupt_or_unsafe_files_are_rejected(tmp_path):
    good = tmp_path / "enc.pth"
    torch.save(authors_state_dict(oracle_vit(depth=1), with_head=False), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ReferenceCheckpointError, match="truncated.pth"):
        load_reference_checkpoint(truncated)
    # a pickle that would run code is refused by weights_only loading
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"x": torch.zeros(1), "obj": _Evil()}, unsafe)
    with pytest.raises(ReferenceCheckpointError, match="unsafe.pth"):
        load_reference_checkpoint(unsafe)
    with pytest.raises(FileNotFoundError):
        load_reference_checkpoint(tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_timm_pretrained_file_accepts_authors_layout(tmp_path):
    import timm

    vit = oracle_vit().eval()
    path = tmp_path / "encoder.pth"
    torch.save(authors_state_dict(vit, with_head=False), path)
    m = timm.create_model("viny", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(patch_tokens(m, x), oracle_patch_tokens(vit, x), atol=1e-5, rtol=1e-4)
