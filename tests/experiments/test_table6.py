"""Table 6 as a grid of upsampler specs, and the Table-6-shaped markdown of result rows."""
import pytest
from compare_cli import parse, run

from sapa import build_upsampler
from sapa.errors import UsageError
from sapa.experiments import compare
from sapa.experiments.table6 import BLOCKS, TABLE6, table6_markdown, table6_specs
from sapa.modules.factory import parse_upsampler_spec


def test_grid_is_table6():
    assert len(TABLE6) == 16  # 4 + 4 + 5 + 3 columns
    specs = table6_specs()
    assert len(specs) == 13 and specs[0] == "sapa-i" and specs[1] == "sapa-b"
    assert [s.label for s in TABLE6 if s.spec == "sapa-b"] == ["B", "32", "eˣ", "5"]
    assert {g for b in BLOCKS for g in b} == {s.group for s in TABLE6}
    paper = {(s.group, s.label): s.paper for s in TABLE6}
    assert paper[("Sim func", "G")] == 44.4 and paper[("Norm func", "relu")] == 40.8
    assert paper[("Kernel size", "7")] == 42.5 and paper[("Embedding dim", "128")] == 43.4


@pytest.mark.parametrize("spec", table6_specs())
def test_every_spec_builds_the_setting_it_names(spec):
    name, options = parse_upsampler_spec(spec)
    up = build_upsampler(spec, 16, 16)
    for key, value in options.items():
        assert getattr(up, key) == value
    assert up.variant == name[-1].upper()


def test_markdown_is_shaped_like_table6():
    rows = [{"upsampler": "sapa-b", "seed": s, "miou": m} for s, m in ((0, 0.40), (1, 0.42))]
    rows += [{"upsampler": "sapa-b:kernel_size=7", "seed": 0, "miou": 0.35},
             {"upsampler": "bilinear", "seed": 0, "miou": 0.30}]
    md = table6_markdown(rows)
    lines = md.splitlines()
    assert lines[0].startswith("SegFormer-B1 ablation: Sim func (I, B, P, G) | Embedding dim")
    assert lines[2] == "| Setting | I | B | P | G | 16 | 32 | 64 | 128 |"
    assert lines[4] == "| paper mIoU (%) | 43.1 | 43.2 | 43.2 | 44.4 | 43.0 | 43.2 | 43.2 | 43.4 |"
    # the default SAPA-B fills its column in every group: mean 41.0, sample std 1.4
    assert lines[5] == ("| ours mIoU (%) | — | 41.0 ± 1.4 | — | — | — | 41.0 ± 1.4 | — | — |")
    assert lines[6] == "| seeds | 0 | 2 | 0 | 0 | 0 | 2 | 0 | 0 |"
    title, second = md.split("\n\n")[2:4]
    assert title == "SegFormer-B1 ablation: Norm func (None, eˣ, relu, sigmoid, softplus) | Kernel size (3, 5, 7)"
    second = second.splitlines()
    assert second[0] == "| Setting | None | eˣ | relu | sigmoid | softplus | 3 | 5 | 7 |"
    assert second[3].endswith("| 41.0 ± 1.4 | — | — | — | — | 41.0 ± 1.4 | 35.0 ± 0.0 |")
    assert "- bilinear: 30.0 ± 0.0 (seeds: 1)" in md


def test_markdown_other_metric():
    md = table6_markdown([{"upsampler": "sapa-g", "seed": 0, "biou": 0.25}], metric="biou",
                         metric_header="boundary IoU (%)")
    assert "| ours boundary IoU (%) | — | — | — | 25.0 ± 0.0 |" in md


# ---- sapa compare --preset table6 ---------------------------------------------------------------

def test_preset_runs_the_grid():
    settings = compare.resolve(parse("--preset", "table6", "--model", "segformer",
                                     "--out", "unused"))
    assert settings["upsamplers"] == table6_specs()
    assert settings["preset"].name == "table6"


def test_preset_belongs_to_segmentation(fake):
    with pytest.raises(UsageError, match="--preset table6 is a comparison of --task segmentation"):
        compare.resolve(parse("--task", "fake", "--preset", "table6", "--out", "x"))


def _tiny_preset(tmp_path, upsamplers):
    pytest.importorskip("transformers", reason="the preset runs on SegFormer")
    out = str(tmp_path / "t6")
    argv = ["--model", "segformer", "--quick", "--preset", "table6", "--image-size", "32",
            "--num-train", "4", "--num-val", "2", "--batch-size", "2", "--iters", "1",
            "--no-figures", "--out", out]
    if upsamplers:
        argv += ["--upsamplers", *upsamplers]
    assert run(*argv) == 0
    with open(f"{out}/results.md") as f:
        return f.read()


def test_preset_runs_table6_at_quick_size(tmp_path, one_thread):
    """The whole grid (13 SAPA variants on SegFormer-B0) at --quick size shrunk to one step of
    4 samples each, and Table 6 in results.md."""
    md = _tiny_preset(tmp_path, None)
    assert ("## Table 6 (the paper: SegFormer-B1 on ADE20K, mIoU; here: segformer b0 on "
            "synthetic data)") in md
    assert "| Setting | I | B | P | G | 16 | 32 | 64 | 128 |" in md
    assert "| Setting | None | eˣ | relu | sigmoid | softplus | 3 | 5 | 7 |" in md
    ours = [line for line in md.splitlines() if line.startswith("| ours mIoU (%)")]
    seeds = [line for line in md.splitlines() if line.startswith("| seeds |")]
    assert len(ours) == len(seeds) == 2
    for line in ours:
        assert all("±" in c for c in line.split("|")[2:-1]), line
    for line in seeds:
        assert {c.strip() for c in line.split("|")[2:-1]} == {"1"}, line
    assert "| sapa-b:normalizer=softplus | 1 |" in md  # the harness's own table lists every run
