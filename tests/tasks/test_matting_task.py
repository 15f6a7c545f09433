"""The matting task's methods, called directly as ``sapa compare`` calls them: options,
data sets at quick size, a model per upsampler with one training step, inference and the meter,
figures."""
import os

import pytest
import torch
from compare_cli import parse_options

from sapa.modules import list_upsamplers
from sapa.tasks.matting import TASK, MattingTask
from sapa.tasks.matting.metrics import METRICS


def _args(**kw):
    """``sapa compare --task matting``'s arguments, ``kw`` as options."""
    return parse_options(task="matting", **kw)


def _settings(**kw):
    s = {"quick": True, "data": None, "data_seed": 0, "image_size": 32, "num_train": 16, "num_val": 6}
    s.update(kw)
    return s


def _config(**kw):
    settings = _settings()
    return {**settings, **TASK.resolve(_args(), settings), **kw}


def test_task_declares_what_the_harness_needs():
    assert isinstance(TASK, MattingTask) and TASK.name == "matting"
    keys = [c.key for c in TASK.columns]
    assert keys == list(METRICS) and TASK.primary == "sad" and TASK.lower_is_better
    assert all(c.lower_is_better for c in TASK.columns)
    assert set(TASK.default_upsamplers) <= set(list_upsamplers())
    assert TASK.default_upsamplers == ("bilinear", "carafe", "indexnet-hin", "a2u", "sapa-i", "sapa-b", "sapa-g")
    assert set(TASK.quick_upsamplers) <= set(TASK.default_upsamplers)
    for key in ("seeds", "iters", "batch_size", "eval_batch_size", "image_size", "num_train",
                "num_val", "eval_every", "ckpt_every", "lr", "weight_decay"):
        default, quick = TASK.presets[key]
    assert TASK.presets["image_size"][0] % 16 == 0 and len(TASK.presets["seeds"][0]) == 3


def test_resolve_defaults_and_option_errors(matting_layout):
    cfg = TASK.resolve(_args(), _settings())
    assert cfg == {"matting_width": 0.25, "bg_dir": None, "data": "synthetic"}
    assert TASK.resolve(_args(matting_width=0.5), _settings())["matting_width"] == 0.5
    with pytest.raises(ValueError, match="--matting-width must be"):
        TASK.resolve(_args(matting_width=0.0), _settings())
    with pytest.raises(ValueError, match="--bg-dir needs --data"):
        TASK.resolve(_args(bg_dir="/tmp"), _settings())
    with pytest.raises(ValueError, match="--image-size must be a positive multiple of 16"):
        TASK.resolve(_args(), _settings(image_size=40))
    with pytest.raises(ValueError, match="not the Adobe Deep Image Matting layout"):
        TASK.resolve(_args(), _settings(data=str(matting_layout / "Training_set")))
    with pytest.raises(ValueError, match="--bg-dir .*: folder not found"):
        TASK.resolve(_args(bg_dir=str(matting_layout / "nope")), _settings(data=str(matting_layout)))
    # real data: crops of 320 and every sample unless asked, all paths absolute
    real = TASK.resolve(_args(), _settings(data=str(matting_layout)))
    assert real["image_size"] == 320 and real["num_train"] is None and real["num_val"] is None
    assert real["data"] == os.path.abspath(matting_layout)
    assert real["bg_dir"] == os.path.abspath(matting_layout / "Training_set" / "bg")
    real = TASK.resolve(_args(image_size=48, num_val=2), _settings(data=str(matting_layout), image_size=48))
    assert real["image_size"] == 48 and real["num_val"] == 2


@pytest.fixture(scope="module")
def quick_sets():
    config = _config()
    return config, TASK.build_datasets(config)


@pytest.mark.parametrize("upsampler", TASK.default_upsamplers)
def test_one_training_step_and_an_evaluation_per_upsampler(upsampler, quick_sets):
    config, (train_set, val_set) = quick_sets
    collate = TASK.collate()
    torch.manual_seed(0)
    model = TASK.build_model(config, upsampler, train_set)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = TASK.to_device(collate([train_set[i] for i in range(4)]), torch.device("cpu"))
    loss = TASK.loss(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()

    model.eval()
    meter = TASK.make_meter(config, val_set)
    for start in (0, 4):
        batch = collate([val_set[i] for i in range(start, min(start + 4, len(val_set)))])
        with torch.no_grad():
            preds = TASK.predict(model, batch)
        assert [p.shape for p in preds] == [(32, 32)] * len(preds)
        meter.update(preds, batch)
    meter.sync(type("OneProcess", (), {"world_size": 1})())
    m = meter.compute()
    assert m["num_images"] == len(val_set) == 6
    assert all(m[k] >= 0 for k in METRICS)
    x = TASK.example_input(config, torch.device("cpu"))
    assert x.shape == (1, 4, 32, 32) and model(x).shape == (1, 1, 32, 32)


def test_real_folders_batches_of_different_sizes(matting_layout):
    settings = _settings(data=str(matting_layout))
    config = {**settings, **TASK.resolve(_args(image_size=32, num_train=3), {**settings, "image_size": 32})}
    train_set, val_set = TASK.build_datasets(config)
    assert len(train_set) == 3 and len(val_set) == 4
    collate = TASK.collate()
    torch.manual_seed(0)
    model = TASK.build_model(config, "sapa-b", train_set)
    TASK.loss(model, collate([train_set[i] for i in range(3)])).backward()
    model.eval()
    batch = collate([val_set[1], val_set[2]])  # 48 x 48 and 40 x 40: a list, not a stack
    assert isinstance(batch["image"], list)
    with torch.no_grad():
        preds = TASK.predict(model, batch)
    assert [tuple(p.shape) for p in preds] == [(48, 48), (40, 40)]
    meter = TASK.make_meter(config, val_set)
    meter.update(preds, batch)
    assert len(meter.records) == 2


def test_figures(quick_sets, tmp_path):
    config, (train_set, val_set) = quick_sets
    models = {}
    for u in ("bilinear", "sapa-b"):
        torch.manual_seed(0)
        models[u] = TASK.build_model(config, u, train_set).eval()
    paths = TASK.draw_figures(str(tmp_path), models, {}, val_set, torch.device("cpu"))
    assert paths == [str(tmp_path / "mattes.png")]
    assert os.path.getsize(paths[0]) > 10_000
