"""``sapa.tasks.detection.TASK``: every method of the Task contract, called directly."""
from __future__ import annotations

import os

import pytest
import torch
from compare_cli import parse

from sapa.errors import UsageError
from sapa.tasks import available_tasks, get_task
from sapa.tasks.base import Meter, check_task
from sapa.tasks.detection import TASK
from sapa.tasks.detection.evaluation import STATS
from sapa.tasks.detection.synthetic import write_coco_layout


class OneProcess:
    world_size = 1

    def all_reduce_sum(self, t):
        return t

    def all_gather_object(self, obj):
        return [obj]


def _args(argv=()):
    """``sapa compare --task detection argv``'s arguments."""
    return parse("--task", "detection", *argv)


def _settings(**kw):
    return {"quick": True, "data": None, "data_seed": 0, "image_size": 64, "num_train": 6,
            "num_val": 4, **kw}


def _config(argv=(), **kw):
    s = _settings(**kw)
    return {**s, **TASK.resolve(_args(argv), s)}


@pytest.fixture(scope="module")
def datasets():
    return TASK.build_datasets(_config())


def test_registered_and_fills_the_contract(datasets):
    assert get_task("detection") is TASK and "detection" in available_tasks()
    check_task(TASK)
    assert isinstance(TASK.make_meter(_config(), datasets[1]), Meter)


def test_resolve_defaults_and_options(tmp_path):
    cfg = TASK.resolve(_args(), _settings())
    assert cfg == {"data": "synthetic", "image_size": 64, "num_train": 6, "num_val": 4,
                   "backbone": "resnet18", "backbone_weights": None, "channels": 64,
                   "detector": "small"}
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    cfg = TASK.resolve(_args(["--backbone", "resnet50", "--channels", "256", "--detector",
                              "torchvision", "--backbone-weights", str(weights)]), _settings())
    assert (cfg["backbone"], cfg["channels"], cfg["detector"]) == ("resnet50", 256, "torchvision")
    assert cfg["backbone_weights"] == str(weights) and os.path.isabs(cfg["backbone_weights"])


@pytest.mark.parametrize("argv, settings, match", [
    (["--channels", "0"], {}, "--channels must be a positive int"),
    (["--backbone-weights", "/nonexistent/r18.pth"], {}, "--backbone-weights: no such file"),
    ([], {"image_size": 32}, "--image-size must be an int >= 64"),
    ([], {"data": "/nonexistent/coco"}, "--data must be 'synthetic' or a folder"),
])
def test_resolve_rejects_bad_input(argv, settings, match):
    with pytest.raises(UsageError, match=match):
        TASK.resolve(_args(argv), _settings(**settings))


def test_resolve_real_data_defaults(tmp_path):
    with pytest.raises(UsageError, match="needs .*instances_train2017.json"):
        TASK.resolve(_args(), _settings(data=str(tmp_path)))
    root = write_coco_layout(str(tmp_path / "coco"), 2, 2, size=64)
    cfg = TASK.resolve(_args(), _settings(data=root))
    # a real set: COCO's image size and every image unless asked
    assert (cfg["data"], cfg["image_size"], cfg["num_train"], cfg["num_val"]) == (root, 800, None, None)
    cfg = TASK.resolve(_args(["--image-size", "96", "--num-val", "1"]),
                       _settings(data=root, image_size=96, num_val=1))
    assert (cfg["image_size"], cfg["num_train"], cfg["num_val"]) == (96, None, 1)
    train, val = TASK.build_datasets({**_settings(), **cfg})
    assert (len(train), len(val)) == (2, 1)


def test_datasets_and_collate(datasets):
    train, val = datasets
    assert (len(train), len(val)) == (6, 4) and train.class_names == val.class_names
    images, targets = TASK.collate()([train[0], train[1]])
    assert images[0].shape == (3, 64, 64) and targets[0]["boxes"].shape[1] == 4
    moved = TASK.to_device((images, targets), torch.device("cpu"))
    assert moved[1][0]["image_id"] == targets[0]["image_id"]


@pytest.mark.parametrize("upsampler", ["nearest", "carafe", "sapa-b"])
def test_model_loss_predict_and_meter(datasets, upsampler):
    train, val = datasets
    config = _config()
    torch.manual_seed(0)
    model = TASK.build_model(config, upsampler, train)
    batch = TASK.collate()([train[i] for i in range(2)])
    model.train()
    loss = TASK.loss(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.backbone.fpn.upsamplers.parameters()) or upsampler == "nearest"
    model.eval()
    meter = TASK.make_meter(config, val)
    with torch.no_grad():
        for start in (0, 2):
            vb = TASK.collate()([val[i] for i in range(start, start + 2)])
            out = TASK.predict(model, vb)
            assert len(out) == 2 and all(o["boxes"].device.type == "cpu" for o in out)
            meter.update(out, vb)
    meter.sync(OneProcess())
    metrics = meter.compute()
    assert set(STATS) <= set(metrics)
    assert all(0 <= metrics[k] <= 1 or metrics[k] != metrics[k] for k in STATS)  # nan: no GT at that scale
    with torch.no_grad():
        assert len(model(TASK.example_input(config, torch.device("cpu")))) == 1


def test_upsampler_spec_reaches_every_fpn_step(datasets):
    model = TASK.build_model(_config(), "sapa-g:embed_dim=8", datasets[0])
    assert [u.q.out_channels for u in model.backbone.fpn.upsamplers] == [8, 8, 8]


def test_figures(datasets, tmp_path):
    _, val = datasets
    config = _config()
    models = {}
    for name in ("nearest", "sapa-b"):
        torch.manual_seed(0)
        models[name] = TASK.build_model(config, name, val).eval()
    paths = TASK.draw_figures(str(tmp_path), models, {}, val, torch.device("cpu"))
    assert [os.path.basename(p) for p in paths] == ["detections.png"]
    assert os.path.getsize(paths[0]) > 10_000
