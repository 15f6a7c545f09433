"""``sapa.models.faster_rcnn.build_faster_rcnn``: torchvision's Faster R-CNN, sized, with the
FPN upsampling swapped."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from sapa.integrations.torchvision import UpsamplingFeaturePyramidNetwork
from sapa.models.faster_rcnn import anchor_sizes, build_faster_rcnn

SMALL = {"rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
         "rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20,
         "rpn_batch_size_per_image": 32, "box_batch_size_per_image": 16}


def _batch():
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 5.0, 60.0, 50.0]]), "labels": torch.tensor([3])}]
    return images, targets


def test_structure_sizes_and_a_training_step():
    torch.manual_seed(0)
    model = build_faster_rcnn(3, "sapa-b", fpn_channels=16, image_size=64,
                              representation_size=32, **SMALL)
    fpn = model.backbone.fpn
    assert isinstance(fpn, UpsamplingFeaturePyramidNetwork) and len(fpn.upsamplers) == 3
    assert model.backbone.out_channels == 16
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background
    assert model.roi_heads.box_head.fc7.out_features == 32
    assert model.transform.min_size == (64,) and model.transform.max_size == 106
    assert model.rpn.anchor_generator.sizes == anchor_sizes(64)
    assert model.rpn._pre_nms_top_n == {"training": 100, "testing": 50}
    # random init: plain BatchNorm, every stage trainable
    body = model.backbone.body
    assert isinstance(body.bn1, torch.nn.BatchNorm2d)
    assert all(p.requires_grad for p in model.parameters())
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in fpn.upsamplers.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4


def test_anchor_sizes_scale_torchvisions_with_the_image():
    assert anchor_sizes(800) == ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    assert anchor_sizes(160) == ((6.4,), (12.8,), (25.6,), (51.2,), (102.4,))


def test_same_seed_builds_the_same_detector_whatever_the_upsampler():
    # the upsamplers are built last, so a seed fixes the rest of the network identically
    models = []
    for up in ("nearest", "sapa-g"):
        torch.manual_seed(3)
        models.append(build_faster_rcnn(2, up, fpn_channels=16, image_size=64, representation_size=32))
    a, b = (m.state_dict() for m in models)
    shared = [k for k in a if ".upsamplers." not in k]
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)


def test_local_backbone_weights_are_loaded_frozen_as_torchvision_does(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    model = build_faster_rcnn(2, "nearest", fpn_channels=16, image_size=64,
                              representation_size=32, backbone_weights=str(path))
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, ref.conv1.weight)
    assert torch.equal(body.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert torch.equal(body.bn1.running_mean, ref.bn1.running_mean)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad and body.layer4[0].conv1.weight.requires_grad


def test_bad_backbone_weights_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="--backbone-weights: no such file"):
        build_faster_rcnn(2, "nearest", backbone_weights=str(tmp_path / "nope.pth"))
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit this torchvision ResNet: unexpected"):
        build_faster_rcnn(2, "nearest", backbone="resnet18", backbone_weights=str(path))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read .*junk.pth"):
        build_faster_rcnn(2, "nearest", backbone_weights=str(junk))
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_faster_rcnn(2, "nearest", backbone="vgg16")
    with pytest.raises(ValueError, match="fpn_channels must be a positive int"):
        build_faster_rcnn(2, "nearest", fpn_channels=0)
    with pytest.raises(ValueError, match="unknown upsampler"):
        build_faster_rcnn(2, "bicubic", fpn_channels=16, image_size=64)
