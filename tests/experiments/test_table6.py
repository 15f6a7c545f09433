"""Table 6 as a grid of upsampler specs, and the Table-6-shaped markdown of result rows."""
import pytest

from sapa import build_upsampler
from sapa.experiments.table6 import BLOCKS, TABLE6, table6_markdown, table6_specs


def test_grid_is_table6():
    assert len(TABLE6) == 16  # 4 + 4 + 5 + 3 columns
    specs = table6_specs()
    assert len(specs) == 13 and specs[0] == "sapa-i" and specs[1] == "sapa-b"
    assert [s.label for s in TABLE6 if s.spec == "sapa-b"] == ["B", "32", "eˣ", "5"]
    assert {g for b in BLOCKS for g in b} == {s.group for s in TABLE6}
    paper = {(s.group, s.label): s.paper for s in TABLE6}
    assert paper[("Sim func", "G")] == 44.4 and paper[("Norm func", "relu")] == 40.8
    assert paper[("Kernel size", "7")] == 42.5 and paper[("Embedding dim", "128")] == 43.4


def _build(spec):
    """Build a spec's module with the options written after the colon (until the factory
    parses specs itself)."""
    name, _, opts = spec.partition(":")
    kwargs = {}
    for item in filter(None, opts.split(",")):
        key, value = item.split("=")
        kwargs[key] = int(value) if value.isdigit() else value
    return build_upsampler(name, 16, 16, **kwargs), kwargs


@pytest.mark.parametrize("spec", table6_specs())
def test_every_spec_builds_the_setting_it_names(spec):
    up, kwargs = _build(spec)
    for key, value in kwargs.items():
        assert getattr(up, key) == value
    assert up.variant == spec[5].upper()


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
