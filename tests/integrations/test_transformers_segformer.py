"""sapa.integrations.transformers: SAPA in a Hugging Face SegformerForSemanticSegmentation."""
import pytest
import torch
import torch.nn as nn

from sapa.models.segformer import GUIDED_STAGES, SegFormerHead, mit_config

transformers = pytest.importorskip("transformers", reason="the integration is for transformers")
from sapa.integrations.transformers import segformer_with_upsampler  # noqa: E402


def _hf(num_labels=4, seed=0):
    torch.manual_seed(seed)
    return transformers.SegformerForSemanticSegmentation(mit_config("b0", num_labels=num_labels,
                                                                    decoder_hidden_size=32))


def test_sapa_g_in_a_hugging_face_segformer_trains():
    model = _hf()
    before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    assert segformer_with_upsampler(model, "sapa-g") is model
    head = model.decode_head
    assert isinstance(head, SegFormerHead) and len(head.upsamplers) == 6
    # the model's own head weights and dropout are kept
    after = head.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert type(head.dropout) is nn.Dropout and head.dropout.p == model.config.classifier_dropout_prob

    calls = []
    for i, up in enumerate(head.upsamplers):
        up.register_forward_pre_hook(lambda m, a, i=i: calls.append((i, a[0].shape, a[1].shape)))
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    out = model(pixel_values=images, labels=labels)
    assert out.logits.shape == (2, 4, 16, 16)
    out.loss.backward()
    # the six stages, in the release order, each guided by the next finer scale
    sizes = {0: (16, 16), 1: (8, 8), 2: (4, 4), 3: (2, 2)}
    assert [i for i, *_ in calls] == list(range(6))
    for (_, x, guide), (src, g) in zip(calls, GUIDED_STAGES):
        assert tuple(guide) == (2, 32, *sizes[g])
        assert tuple(x[-2:]) == tuple(s // 2 for s in sizes[g])
    for up in head.upsamplers:
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in up.parameters())


def test_bilinear_keeps_the_original_computation():
    model = _hf().eval()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want = model(pixel_values=image).logits
        segformer_with_upsampler(model, "bilinear")
        torch.testing.assert_close(model(pixel_values=image).logits, want)


def test_mode_dtype_and_options_follow_the_model():
    model = _hf().double().eval()
    segformer_with_upsampler(model, "sapa-b", kernel_size=3, embed_dim=8)
    head = model.decode_head
    assert not head.training
    assert all(p.dtype == torch.float64 for p in head.parameters())
    assert head.upsamplers[0].kernel_size == 3 and head.upsamplers[0].embed_dim == 8
    assert model(pixel_values=torch.randn(1, 3, 64, 64, dtype=torch.float64)).logits.dtype == torch.float64


def test_refuses_what_it_cannot_serve():
    with pytest.raises(TypeError, match="SegformerForSemanticSegmentation"):
        segformer_with_upsampler(nn.Linear(2, 2), "sapa-b")
    with pytest.raises(ValueError, match="unknown upsampler"):
        segformer_with_upsampler(_hf(), "sapa-x")
    model = _hf()
    model.config.reshape_last_stage = False
    with pytest.raises(ValueError, match="reshape_last_stage"):
        segformer_with_upsampler(model, "sapa-b")
