"""SegFormer with swappable upsampling: the six-stage order of the SAPA / FADE releases, the
resize path, equality with transformers' SegFormer, weights from local paths, input checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sapa.errors import UsageError
from sapa.models import SegFormer, SegFormerHead, build_model, mit_encoder
from sapa.models.segformer import GUIDED_STAGES, MIT_SIZES, mit_config

transformers = pytest.importorskip("transformers", reason="SegFormer's encoder is transformers'")


def _record_stages(head: SegFormerHead):
    """Hooks that record, per call, which upsampler ran and the tensors it got and made, and
    the projected features ``[c1 .. c4]``."""
    calls, projected = [], {}
    for i, up in enumerate(head.upsamplers):
        up.register_forward_hook(lambda m, a, o, i=i: calls.append((i, a[0], a[1], o)))
    for i, proj in enumerate(head.linear_projections):
        proj.register_forward_hook(lambda m, a, o, i=i: projected.__setitem__(i, o))
    return calls, projected


@pytest.mark.parametrize("upsampler", ["sapa-b", "sapa-g"])
def test_six_guided_stages_in_the_release_order(upsampler):
    torch.manual_seed(0)
    model = SegFormer(5, upsampler, "b0", embed_dim=16)
    calls, c = _record_stages(model.decode_head)
    out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 5, 64, 96)
    assert [i for i, *_ in calls] == [0, 1, 2, 3, 4, 5]  # each module once, in order
    # c1..c4 at 1/4 .. 1/32 of 64 x 96, projected to 16 channels
    assert [tuple(c[i].shape) for i in range(4)] == [(2, 16, 16, 24), (2, 16, 8, 12),
                                                     (2, 16, 4, 6), (2, 16, 2, 3)]
    # up0(c4, c3), up1(., c2), up2(., c1); up3(c3, c2), up4(., c1); up5(c2, c1): the guide of
    # every stage is the projected feature of the next finer scale itself (not yet upsampled)
    expected_x = {0: c[3], 1: calls[0][3], 2: calls[1][3], 3: c[2], 4: calls[3][3], 5: c[1]}
    for (k, x, guide, out_k), (src, g) in zip(calls, GUIDED_STAGES):
        assert guide is c[g], f"stage {k} got the wrong guide"
        assert x is expected_x[k], f"stage {k} got the wrong input"
        assert out_k.shape == (2, 16, 2 * x.shape[2], 2 * x.shape[3]) == (2, 16, *guide.shape[-2:])
    assert calls[2][3].shape[-2:] == calls[4][3].shape[-2:] == calls[5][3].shape[-2:] == (16, 24)


def test_guide_free_learned_upsamplers_chain_six_x2_stages():
    torch.manual_seed(0)
    model = SegFormer(5, "carafe", "b0", embed_dim=16)
    calls, c = _record_stages(model.decode_head)
    model(torch.randn(1, 3, 64, 64))
    assert len(model.decode_head.upsamplers) == 6
    assert [i for i, *_ in calls] == list(range(6))
    assert [tuple(x.shape[-2:]) for _, x, _, _ in calls] == [(2, 2), (4, 4), (8, 8), (4, 4),
                                                              (8, 8), (8, 8)]
    assert all(o.shape[-2:] == (2 * x.shape[2], 2 * x.shape[3]) for _, x, _, o in calls)


@pytest.mark.parametrize("upsampler", ["bilinear", "nearest"])
def test_interpolation_is_one_resize_per_scale(upsampler):
    torch.manual_seed(0)
    model = SegFormer(5, upsampler, "b0", embed_dim=16).eval()
    calls, c = _record_stages(model.decode_head)
    model(torch.randn(1, 3, 64, 64))
    assert len(model.decode_head.upsamplers) == 3
    mode = dict(mode="bilinear", align_corners=False) if upsampler == "bilinear" else dict(mode="nearest")
    for (k, x, guide, out), i in zip(calls, (3, 2, 1)):
        assert x is c[i] and guide is c[0]
        torch.testing.assert_close(out, F.interpolate(c[i], size=(16, 16), **mode))


def test_bilinear_segformer_is_transformers_segformer():
    """Same state-dict names, same numbers: a Hugging Face checkpoint loads into SegFormer."""
    torch.manual_seed(0)
    hf = transformers.SegformerForSemanticSegmentation(mit_config("b0", num_labels=5)).eval()
    ours = SegFormer(5, "bilinear", "b0").eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        logits = hf(image).logits
        torch.testing.assert_close(ours.decode(image), logits)
        torch.testing.assert_close(ours(image), F.interpolate(logits, size=(64, 96), mode="bilinear",
                                                              align_corners=False))


def test_a_hugging_face_checkpoint_loads_with_new_upsamplers():
    torch.manual_seed(0)
    hf = transformers.SegformerForSemanticSegmentation(mit_config("b0", num_labels=5))
    ours = SegFormer(5, "sapa-b", "b0")
    result = ours.load_state_dict(hf.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith("decode_head.upsamplers.") for k in result.missing_keys)


@pytest.mark.parametrize("upsampler", ["bilinear", "carafe", "sapa-b", "sapa-g"])
def test_forward_backward(upsampler):
    torch.manual_seed(0)
    model = SegFormer(4, upsampler, "b0", embed_dim=16)
    image = torch.randn(2, 3, 32, 64)
    loss = F.cross_entropy(model(image), torch.randint(0, 4, (2, 32, 64)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    for up in model.decode_head.upsamplers:  # the upsamplers are trained too
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in up.parameters())


def test_b1_matches_the_paper_architecture():
    """MiT-B1 + the 256-wide head for ADE20K's 150 classes: 13,715,798 parameters, which is
    Table 2's 13.74 M less mmseg's unused ``conv_seg`` (Conv2d(128, 150, 1): 19,350)."""
    model = SegFormer(150, "bilinear", "b1")
    assert sum(p.numel() for p in model.parameters()) == 13_715_798
    cfg = model.segformer.config
    assert (cfg.hidden_sizes, cfg.depths, cfg.num_attention_heads, cfg.sr_ratios) == (
        [64, 128, 320, 512], [2, 2, 2, 2], [1, 2, 5, 8], [8, 4, 2, 1])
    head = model.decode_head
    assert head.embed_dim == 256 and head.linear_fuse.in_channels == 1024
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1


def test_sizes_table():
    assert list(MIT_SIZES) == ["b0", "b1", "b2", "b3", "b4", "b5"]
    assert MIT_SIZES["b0"].hidden_sizes == (32, 64, 160, 256)
    assert [MIT_SIZES[s].depths for s in ("b2", "b3", "b4", "b5")] == [
        (3, 4, 6, 3), (3, 4, 18, 3), (3, 8, 27, 3), (3, 6, 40, 3)]
    assert [MIT_SIZES[s].decoder_dim for s in MIT_SIZES] == [256, 256, 768, 768, 768, 768]


def test_build_model_segformer():
    model = build_model("segformer", 3, "sapa-b", segformer_size="b0")
    assert isinstance(model, SegFormer) and model.size == "b0"
    assert model.decode_head.embed_dim == 256


# ---- weights from local paths ---------------------------------------------------------------

def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weights_from_a_state_dict_file(tmp_path):
    torch.manual_seed(1)
    src = SegFormer(5, "sapa-b", "b0")
    path = tmp_path / "segformer.pt"
    torch.save(src.state_dict(), path)  # a whole model: "segformer." prefix, decode head left out
    assert _same_weights(mit_encoder("b0", str(path)), src.segformer)
    torch.save({"state_dict": src.segformer.state_dict()}, tmp_path / "ckpt.pth")
    assert _same_weights(mit_encoder("b0", str(tmp_path / "ckpt.pth")), src.segformer)
    torch.manual_seed(2)
    model = SegFormer(5, "bilinear", "b0", weights=str(path))
    assert _same_weights(model.segformer, src.segformer)


def test_weights_from_a_hugging_face_folder(tmp_path):
    torch.manual_seed(1)
    hf = transformers.SegformerForSemanticSegmentation(mit_config("b0", num_labels=5))
    hf.save_pretrained(tmp_path / "hf")
    assert _same_weights(mit_encoder("b0", str(tmp_path / "hf")), hf.segformer)
    with pytest.raises(ValueError, match=r"hf holds a MiT with hidden sizes \[32, 64, 160, 256\]"):
        mit_encoder("b1", str(tmp_path / "hf"))


def test_bad_weights_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        mit_encoder("b0", str(tmp_path / "missing.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty is a folder without config.json"):
        mit_encoder("b0", str(tmp_path / "empty"))
    torch.save({"encoder.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt does not match MiT-b0 \(\d+ missing"):
        mit_encoder("b0", str(tmp_path / "other.pt"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt: expected a state dict"):
        mit_encoder("b0", str(tmp_path / "list.pt"))
    mit_config("b0").save_pretrained(tmp_path / "config-only")  # a folder without weights
    with pytest.raises(UsageError, match="cannot load .*config-only as a Hugging Face SegFormer"):
        mit_encoder("b0", str(tmp_path / "config-only"))
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(UsageError, match="cannot read .*text.pt as a state dict"):
        mit_encoder("b0", str(tmp_path / "text.pt"))


# ---- input checks ---------------------------------------------------------------------------

def test_bad_arguments():
    with pytest.raises(ValueError, match=r"size must be one of \['b0'"):
        SegFormer(5, "bilinear", "b9")
    with pytest.raises(ValueError, match="unknown upsampler 'nope'"):
        SegFormer(5, "nope", "b0")
    with pytest.raises(ValueError, match="num_classes"):
        SegFormer(1, "bilinear", "b0")
    with pytest.raises(ValueError, match="dropout must be a probability"):
        SegFormer(5, "bilinear", "b0", dropout=1.5)
    with pytest.raises(ValueError, match="in_channels must list the 4 MiT stages"):
        SegFormerHead((8, 16, 32), 8, 5)


def test_bad_inputs():
    model = SegFormer(5, "sapa-b", "b0", embed_dim=8)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"B x 3 x H x W tensor, got \(1, 1, 64, 64\)"):
        model(torch.randn(1, 1, 64, 64))
    head = model.decode_head
    feats = [torch.randn(1, c, 16 >> i, 16 >> i) for i, c in enumerate((32, 64, 160, 256))]
    with pytest.raises(ValueError, match=r"features\[2\] must be B x 160 x H x W"):
        head([*feats[:2], feats[2][:, :3], feats[3]])
    with pytest.raises(ValueError, match="from fine .c1. to coarse"):
        head([torch.randn(1, c, 2 << i, 2 << i) for i, c in enumerate((32, 64, 160, 256))])
    with pytest.raises(ValueError, match="list of the 4 MiT stage outputs"):
        head(feats[:3])


def test_guided_head_takes_the_odd_sizes_mit_makes():
    """Any input size through the head with SAPA (MiT rounds odd sizes up); fixed-factor
    upsamplers refuse them with their own message."""
    torch.manual_seed(0)
    sizes = [(17, 23), (9, 12), (5, 6), (3, 3)]
    feats = [torch.randn(1, c, *s) for c, s in zip((32, 64, 160, 256), sizes)]
    out = SegFormerHead((32, 64, 160, 256), 8, 5, "sapa-b")(feats)
    assert out.shape == (1, 5, 17, 23)
    with pytest.raises(ValueError, match="upsamples by exactly scale_factor=2"):
        SegFormerHead((32, 64, 160, 256), 8, 5, "carafe")(feats)
