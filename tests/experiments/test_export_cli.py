"""``sapa export``: an upsampler, and the model of a ``sapa compare`` checkpoint (rebuilt through
its task from what the checkpoint, or the comparison's results.json, records), to ONNX, checked
in ONNX Runtime; the errors that come before any work."""
from __future__ import annotations

import json
import os

import pytest
import torch

from sapa.cli import main as cli_main
from sapa.errors import UsageError
from sapa.experiments import compare
from sapa.experiments.checkpoints import load_checkpoint_run

pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'sapa[export]'")
pytest.importorskip("onnxscript", reason="needs onnxscript: pip install 'sapa[export]'")
import onnx  # noqa: E402

# kernel size 1: the CLI is tested here; the upsamplers' export in tests/deploy
SPEC = "sapa-b:embed_dim=4,kernel_size=1"


def test_export_an_upsampler(tmp_path, capsys):
    out = tmp_path / "up.onnx"
    assert cli_main(["export", "--upsampler", SPEC, "--channels", "8", "--guide-channels", "6",
                     "--size", "4", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["x", "guide"]
    assert "inputs x batchx8xheightxwidth, guide batchx6xguide_heightxguide_width" in text
    # the example, then another batch and a 2H+1 x 2W+1 guide
    assert "on 2x8x4x5, 2x6x8x10:" in text and "on 3x8x5x7, 3x6x11x15:" in text
    assert text.count(", within rtol=0.0001, atol=1e-05") == 2


def _tiny_run(tmp_path, capsys):
    """A checkpoint written by ``sapa compare`` itself: one training step of a small SegNet."""
    out = tmp_path / "cmp"
    argv = ["compare", "--quick", "--image-size", "16", "--num-train", "2", "--num-val", "2",
            "--widths", "4,8", "--iters", "1", "--eval-every", "1", "--no-figures",
            "--upsamplers", SPEC, "--seeds", "0", "--threads", "1", "--out", str(out)]
    assert cli_main(argv) == 0
    capsys.readouterr()
    (ckpt,) = (out / "runs").glob("*/checkpoint.pt")
    settings = compare.resolve(compare.parse_args(argv[1:]))
    return ckpt, settings["config"]


def test_export_a_checkpoint(tmp_path, capsys):
    ckpt, _ = _tiny_run(tmp_path, capsys)
    out = tmp_path / "model.onnx"
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"segmentation model SegNet with {SPEC}" in text
    assert "inputs image batchx3x4*height_div4x4*width_div4; outputs logits" in text
    assert "on 2x3x16x16:" in text and "on 3x3x20x16:" in text  # another batch and height
    assert text.count(", within rtol=0.0001") == 2
    assert os.path.getsize(out) > 0


def test_checkpoint_of_an_earlier_version_is_found_in_results_json(tmp_path, capsys):
    """Checkpoints written before they recorded ``upsampler`` and ``run_config``: the row of the
    comparison's results.json that names the checkpoint says what to build."""
    ckpt, config = _tiny_run(tmp_path, capsys)
    state = torch.load(ckpt, weights_only=False)
    trained = state["model"]
    for key in ("upsampler", "run_config"):
        del state[key]
    torch.save(state, ckpt)
    results = ckpt.parent.parent.parent / "results.json"
    data = json.loads(results.read_text())
    (row,) = data["rows"]
    assert row["checkpoint"] == os.path.relpath(ckpt, results.parent)
    results.unlink()
    with pytest.raises(UsageError, match="records no run configuration .* no .*results.json"):
        load_checkpoint_run(str(ckpt))
    results.write_text(json.dumps({**data, "rows": [dict(row, checkpoint="other")]}))
    with pytest.raises(UsageError, match="no row of .* names the checkpoint"):
        load_checkpoint_run(str(ckpt))
    results.write_text(json.dumps(data))
    run = load_checkpoint_run(str(ckpt))
    assert (run.task.name, run.upsampler, run.seed) == ("segmentation", SPEC, 0)
    assert run.config["widths"] == config["widths"]
    assert not run.model.training
    for name, t in trained.items():
        assert torch.equal(run.model.state_dict()[name], t), name


def test_bad_checkpoints(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_checkpoint_run(str(tmp_path / "none.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(UsageError, match="bad.pt cannot be read"):
        load_checkpoint_run(str(bad))
    torch.save({"model": {}}, bad)
    with pytest.raises(UsageError, match="not a sapa compare checkpoint .no iter, optimizer"):
        load_checkpoint_run(str(bad))


@pytest.mark.parametrize("argv, match", [
    (["--upsampler", "sapa-b"], "needs --channels"),
    (["--upsampler", "sapa-z", "--channels", "8"], "unknown upsampler 'sapa-z'"),
    (["--upsampler", "sapa-b:kernel_size=4", "--channels", "8"], "kernel_size must be an odd"),
    (["--upsampler", "a2u", "--channels", "8", "--scale-factor", "3"], "exactly x2"),
    (["--upsampler", "sapa-b", "--channels", "8", "--batch", "1"], "--batch must be >= 2"),
    (["--upsampler", "sapa-b", "--channels", "0"], "--channels must be >= 1"),
    (["--checkpoint", "x.pt", "--channels", "8"], "options of --upsampler"),
    (["--checkpoint", "missing.pt"], "no such file"),
])
def test_usage_errors(tmp_path, capsys, argv, match):
    assert cli_main(["export", *argv, "--out", str(tmp_path / "m.onnx")]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_out_folder_must_exist(tmp_path, capsys):
    assert cli_main(["export", "--upsampler", "nearest", "--channels", "2",
                     "--out", str(tmp_path / "no" / "m.onnx")]) == 2
    assert "--out: no such folder" in capsys.readouterr().err


def test_upsampler_or_checkpoint_not_both(tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["export", "--upsampler", "nearest", "--checkpoint", "x.pt", "--out", "m.onnx"])
