"""``sapa.tasks.depth.TASK`` called directly, as the harness calls it."""
import argparse
import os

import pytest
import torch
from compare_cli import parse_options
from nyu_layout import write_nyu_layout

from sapa.errors import UsageError
from sapa.tasks import available_tasks, get_task
from sapa.tasks.base import Meter, Task, check_task
from sapa.tasks.depth import TASK, DepthTask

QUICK = {"data": "synthetic", "image_size": 32, "num_train": 4, "num_val": 3, "data_seed": 0}


def _args(**kw):
    """``sapa compare --task depth``'s arguments, ``kw`` as options."""
    return parse_options(task="depth", **kw)


def _batch(items):
    return {"image": torch.stack([it["image"] for it in items]),
            "depth": torch.stack([it["depth"] for it in items]),
            "index": torch.tensor([it["index"] for it in items])}


def test_contract():
    assert get_task("depth") is TASK and "depth" in available_tasks()
    check_task(TASK)
    assert isinstance(TASK, DepthTask) and isinstance(TASK, Task)
    assert TASK.name == "depth" and TASK.primary == "rmse" and TASK.lower_is_better
    assert [c.key for c in TASK.columns] == ["delta1", "delta2", "delta3", "abs_rel", "sq_rel",
                                             "rmse", "rmse_log", "log10"]
    assert TASK.primary in [c.key for c in TASK.columns]
    assert TASK.default_upsamplers == ("nearest", "bilinear", "carafe", "sapa-b", "sapa-g")
    keys = {"seeds", "iters", "batch_size", "eval_batch_size", "image_size", "num_train",
            "num_val", "eval_every", "ckpt_every", "lr", "weight_decay"}
    assert set(TASK.presets) == keys and all(len(v) == 2 for v in TASK.presets.values())
    assert all(s % 32 == 0 for s in TASK.presets["image_size"])


def test_options_default_to_none_and_have_help():
    p = argparse.ArgumentParser()
    TASK.add_arguments(p.add_argument_group("depth"))
    actions = [a for a in p._actions if a.dest != "help"]
    assert {a.dest for a in actions} == {"encoder", "bts_size", "max_depth", "encoder_weights"}
    assert all(a.default is None and a.help for a in actions)


def test_resolve_defaults_and_values():
    cfg = TASK.resolve(_args(), {**QUICK, "data": None})
    assert cfg == {"encoder": "resnet18", "bts_size": 64, "max_depth": 10.0, "encoder_weights": None,
                   "data": "synthetic", "image_size": 32, "num_train": 4, "num_val": 3}
    cfg = TASK.resolve(_args(encoder="resnet50", bts_size=512, max_depth=8), dict(QUICK))
    assert cfg["encoder"] == "resnet50" and cfg["bts_size"] == 512 and cfg["max_depth"] == 8.0


@pytest.mark.parametrize("kw, settings, match", [
    ({"bts_size": 40}, {}, "--bts-size"),
    ({"max_depth": -1}, {}, "--max-depth"),
    ({"max_depth": "inf"}, {}, "--max-depth"),
    ({"encoder_weights": "/no/such/file.pth"}, {}, "--encoder-weights"),
    ({}, {"image_size": 48}, "--image-size must be a positive multiple of 32"),
    ({}, {"data": "/no/such/folder"}, "--data must be 'synthetic' or a folder with NYU"),
])
def test_resolve_rejects_bad_values_naming_the_option(kw, settings, match):
    with pytest.raises(UsageError, match=match):
        TASK.resolve(_args(**kw), {**QUICK, **settings})


def test_resolve_nyu_checks_the_folder_and_size(tmp_path, monkeypatch):
    root = write_nyu_layout(str(tmp_path / "nyu"), num_train=2, num_test=2)
    monkeypatch.chdir(tmp_path)
    # real data: BTS's 480 rows and every sample unless the options say otherwise
    cfg = TASK.resolve(_args(), {**QUICK, "data": "nyu"})
    assert (cfg["data"], cfg["image_size"], cfg["num_train"], cfg["num_val"]) == (root, 480, None, None)
    args = _args()
    args.image_size, args.num_val = 72, 2
    cfg = TASK.resolve(args, {**QUICK, "data": root, "image_size": 72, "num_val": 2})
    assert (cfg["image_size"], cfg["num_train"], cfg["num_val"]) == (72, None, 2)
    args.image_size = 48
    with pytest.raises(UsageError, match="--image-size .* NYU .* >= 64"):
        TASK.resolve(args, {**QUICK, "data": root, "image_size": 48})
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="--data"):
        TASK.resolve(_args(), {**QUICK, "data": str(tmp_path / "empty")})


@pytest.fixture(scope="module")
def quick():
    config = {**QUICK, **TASK.resolve(_args(bts_size=32), dict(QUICK))}
    train, val = TASK.build_datasets(config)
    return config, train, val


@pytest.mark.parametrize("upsampler", ["nearest", "sapa-b"])
def test_model_loss_predict_and_meter(quick, upsampler):
    config, train, val = quick
    torch.manual_seed(0)
    model = TASK.build_model(config, upsampler, train)
    model.train()
    loss = TASK.loss(model, _batch([train[0], train[1]]))
    assert loss.dim() == 0 and torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert all(p.grad is not None for p in model.upconv2.up.parameters())
    model.eval()
    meter = TASK.make_meter(config, val)
    assert isinstance(meter, Meter)
    with torch.no_grad():
        batch = _batch([val[i] for i in range(len(val))])
        pred = TASK.predict(model, batch)
        assert pred.shape == batch["depth"].shape
        meter.update(pred, batch)
    out = meter.compute()
    assert out["num_images"] == 3 and 0 < out["rmse"] < 10 and 0 <= out["delta1"] <= 1
    x = TASK.example_input(config, torch.device("cpu"))
    assert x.shape == (1, 3, 32, 32) and model(x).shape == (1, 1, 32, 32)


def test_predict_pads_to_32_and_resizes_to_the_ground_truth():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, image):
            seen.append(tuple(image.shape))
            return image[:, :1] * 0 + 2.0

    batch = {"image": torch.randn(2, 3, 72, 96), "depth": torch.ones(2, 1, 120, 160)}
    pred = TASK.predict(Probe(), batch)
    assert seen == [(2, 3, 96, 96)] and pred.shape == (2, 1, 120, 160)
    assert torch.allclose(pred, torch.full_like(pred, 2.0))


def test_nyu_end_to_end_pieces(tmp_path):
    root = write_nyu_layout(str(tmp_path / "nyu"), num_train=2, num_test=2)
    settings = {**QUICK, "data": root, "image_size": 72}
    args = _args(bts_size=32)
    args.image_size, args.num_train, args.num_val = 72, None, None
    config = {**settings, **TASK.resolve(args, settings)}
    train, val = TASK.build_datasets(config)
    assert len(train) == 2 and len(val) == 2 and val.crop == "eigen"
    torch.manual_seed(0)
    model = TASK.build_model(config, "nearest", train).eval()
    meter = TASK.make_meter(config, val)
    assert meter.crop == "eigen"
    with torch.no_grad():
        batch = _batch([val[0], val[1]])
        meter.update(TASK.predict(model, batch), batch)
    assert meter.compute()["num_images"] == 2
    assert TASK.example_input(config, torch.device("cpu")).shape == (1, 3, 96, 96)


def test_figures(quick, tmp_path):
    config, train, val = quick
    models = {}
    for name in ("nearest", "sapa-b"):
        torch.manual_seed(0)
        models[name] = TASK.build_model(config, name, train).eval()
    curve = {"iters": [1, 2, 3], "loss": [3.0, 2.5, 2.0], "val_iters": [2, 3], "val_rmse": [1.2, 1.0]}
    paths = TASK.draw_figures(str(tmp_path), models, {"nearest": [curve]}, val, torch.device("cpu"))
    assert [os.path.basename(p) for p in paths] == ["depth_predictions.png"]
    assert all(os.path.getsize(p) > 10_000 for p in paths)
