import pytest
import timm
import torch

import viny
from viny.model import VINY_ARGS, ViNy, patch_tokens, patchify, unpatchify


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_encoder_parameter_count_is_the_papers():
    assert n_params(timm.create_model("viny", num_classes=0)) == 4_842_880
    # the paper's 4,843,138 = encoder + Linear(128, 2)
    assert n_params(timm.create_model("viny", num_classes=2)) == 4_843_138


def test_timm_registration():
    assert "viny" in timm.list_models("viny*") and "viny_test" in timm.list_models("viny*")
    m = timm.create_model("viny", num_classes=0)
    assert isinstance(m, ViNy) and isinstance(m, timm.models.VisionTransformer)
    assert m.pretrained_cfg["input_size"] == (3, 128, 128)
    assert m.patch_embed.num_patches == 64 and m.grid_size == (8, 8)
    assert m.blocks[0].attn.qkv.weight.shape == (1536, 128) and m.blocks[0].attn.qkv.bias is None
    assert m.blocks[0].attn.proj.weight.shape == (128, 512)
    assert m.blocks[0].mlp.fc1.weight.shape == (512, 128)
    assert m.pos_embed.shape == (1, 65, 128) and m.cls_token.shape == (1, 1, 128)
    assert m.norm.eps == 1e-5


def test_create_encoder_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'vit_huge'"):
        viny.create_encoder("vit_huge")


@pytest.mark.parametrize("name", ["viny", "viny_test"])
def test_every_parameter_receives_a_gradient(name):
    m = timm.create_model(name, num_classes=3)
    s = m.pretrained_cfg["input_size"][-1]
    x = torch.randn(2, 3, s, s)
    (m(x).sum() + patch_tokens(m, x).sum()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_patchify_is_pixel_major_and_invertible():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    p = patchify(x, 16)
    assert p.shape == (2, 4, 768)
    # first values of patch 0: pixel (0,0) channels r,g,b, then pixel (0,1) ...
    assert p[0, 0, :6].tolist() == [x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 2, 0, 0], x[0, 0, 0, 1], x[0, 1, 0, 1], x[0, 2, 0, 1]]
    # patch 1 is the top-right one
    assert p[0, 1, 0] == x[0, 0, 0, 16]
    assert torch.equal(unpatchify(p, 16), x)


def test_patch_tokens_shape_and_no_cls():
    m = timm.create_model("viny").eval()
    x = torch.randn(3, 3, 128, 128)
    t = patch_tokens(m, x)
    assert t.shape == (3, 64, 128)
    # changing the CLS token must not change the patch tokens (CLS is not in the sequence)
    with torch.no_grad():
        m.cls_token.add_(5.0)
    assert torch.allclose(patch_tokens(m, x), t)


def test_wrong_image_size_is_a_clear_error():
    m = timm.create_model("viny_test")
    with pytest.raises(ValueError, match="expects 64x64"):
        m(torch.randn(1, 3, 128, 128))


def test_fused_and_manual_attention_agree_in_fp32():
    m = timm.create_model("viny").eval()
    x = torch.randn(4, 3, 128, 128)
    with torch.no_grad():
        manual = patch_tokens(m.set_attn_impl("manual"), x)
        fused = patch_tokens(m.set_attn_impl("fused"), x)
    assert torch.allclose(manual, fused, atol=1e-5, rtol=1e-5)


def test_attention_auto_picks_custom_on_cpu_and_manual_for_kept_weights():
    m = timm.create_model("viny_test")
    attn = m.blocks[0].attn
    assert attn.attn_impl == "auto"
    assert attn.kernel(torch.zeros(1)) == "custom"
    attn.keep_weights = True  # a view that reads the softmax weights needs the plain path
    assert attn.kernel(torch.zeros(1)) == "manual"
    with pytest.raises(ValueError, match="attn_impl"):
        timm.create_model("viny_test", attn_impl="flash")


@pytest.mark.parametrize("model", ["viny_test", "viny"])
def test_custom_attention_equals_plain_autograd_in_fp32(model):
    """The hand-written backward computes the plain path's gradients: input, qkv weight
    and every other parameter, to fp32 rounding."""
    torch.manual_seed(0)
    m = timm.create_model(model)
    size = m.patch_embed.img_size[0]
    x = torch.randn(3, 3, size, size)

    def grads(impl):
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = patch_tokens(m.set_attn_impl(impl), xi)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        return out.detach(), xi.grad, [p.grad.clone() for p in m.parameters() if p.grad is not None]

    out_m, gx_m, gp_m = grads("manual")
    out_c, gx_c, gp_c = grads("custom")
    assert torch.allclose(out_c, out_m, atol=1e-5, rtol=1e-5)
    assert torch.allclose(gx_c, gx_m, atol=1e-5, rtol=1e-4)
    assert len(gp_c) == len(gp_m)
    for a, b in zip(gp_c, gp_m):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_custom_attention_under_bf16_autocast_matches_plain_and_keeps_fp32_grads():
    torch.manual_seed(0)
    m = timm.create_model("viny_test")
    x = torch.randn(4, 3, 64, 64)

    def run(impl):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = patch_tokens(m.set_attn_impl(impl), x)
        out.float().square().mean().backward()
        return out.float().detach(), m.blocks[0].attn.qkv.weight.grad.clone()

    (out_m, g_m), (out_c, g_c) = run("manual"), run("custom")
    assert g_c.dtype == torch.float32
    assert (out_c - out_m).abs().max() < 5e-2
    assert (g_c - g_m).norm() / g_m.norm() < 2e-2


def test_reference_init_matches_authors():
    m = ViNy(**VINY_ARGS)
    # randn positions / CLS (std 1), unlike timm's 0.02
    assert 0.8 < m.pos_embed.std().item() < 1.2
    t = ViNy(**VINY_ARGS, init="timm")
    assert t.pos_embed.std().item() < 0.1


@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-5), ("bf16", 5e-2)])
def test_attention_kernels_train_alike(dtype, tol):
    """The fast paths change speed, not science: a few training steps with the fused, the
    custom and the plain attention kernel give the same losses (fp32: to rounding; bf16: within bf16 tolerance)."""
    from viny.heads import segmentation_loss
    from viny.tasks import Segmenter

    def run(impl):
        torch.manual_seed(0)
        model = Segmenter(timm.create_model("viny_test", attn_impl=impl))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(3):
            x, y = torch.randn(8, 3, 64, 64, generator=g), torch.randint(0, 3, (8, 64, 64), generator=g)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                loss = segmentation_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return torch.tensor(losses)

    assert torch.allclose(run("manual"), run("fused"), atol=tol, rtol=tol)
    assert torch.allclose(run("manual"), run("custom"), atol=tol, rtol=tol)


def test_forward_intermediates_and_attention_weights():
    import numpy as np

    from viny.data import augment as A
    from viny.model import patch_tokens
    from viny.registry import create_encoder
    from viny.views import attention_maps

    torch.manual_seed(0)
    enc = create_encoder("viny_test").eval()
    x = torch.randn(2, 3, 64, 64)
    final, inter = enc.forward_intermediates(x, norm=True)
    assert len(inter) == 2 and torch.allclose(inter[-1], patch_tokens(enc, x), atol=1e-6) and torch.allclose(final, inter[-1], atol=1e-6)
    (nchw,) = enc.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)
    assert nchw.shape == (2, 32, 4, 4)
    # attention weights of the last block by hand: softmax(q k^T * scale) on the CLS path
    blk = enc.blocks[-1]
    with torch.no_grad():
        h = enc._pos_embed(enc.patch_embed(x))
        h = enc.blocks[0](h)
        q, k, _ = blk.attn.qkv(blk.norm1(h)).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4).unbind(0)
        expected = ((q * blk.attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    assert torch.allclose(enc.attention_weights(x), expected, atol=1e-6)
    assert blk.attn.weights is None and not blk.attn.keep_weights  # nothing kept afterwards
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    maps = attention_maps(enc, image)
    cls_to_cls = enc.attention_weights(A.normalize(A.to_float(torch.from_numpy(image[None]))))[0, :, 0, 0].numpy()
    assert maps.shape == (2, 4, 4) and np.allclose(maps.sum((1, 2)), 1 - cls_to_cls, atol=1e-5)  # the CLS row's weight on the patches


def test_train_config_init_sets_up_the_random_encoder():
    from viny.config import make_config
    from viny.errors import VinyError
    from viny.train import init_encoder

    assert init_encoder(make_config("finetune")).pos_embed.std().item() > 0.8  # the authors' N(0,1)
    assert init_encoder(make_config("finetune", init="timm")).pos_embed.std().item() < 0.1
    with pytest.raises(VinyError, match="--init"):
        make_config("finetune", init="timm", init_from="x.safetensors").validate()
