"""Every number in the documentation's result tables comes from a committed ``results.json``
(issue 17, item 4): ``python -m sapa.experiments.readme_tables`` regenerates the marked blocks,
``--check`` fails on a stale block or on a results table typed by hand."""
import json
import os
import shutil

import fake_task
import pytest
from compare_cli import run

from sapa.experiments import readme_tables

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    """``results.json`` of a real (tiny) comparison: the fake task, 2 upsamplers x 2 seeds."""
    out = str(tmp_path_factory.mktemp("run") / "o")
    with fake_task.registered():
        assert run("--task", "fake", "--no-figures", "--seeds", "0", "1", "2", "--out", out) == 0
        yield os.path.join(out, "results.json")


def _doc(tmp_path, tiny_results, body_inside="stale"):
    os.makedirs(tmp_path / "docs" / "results" / "fake", exist_ok=True)
    shutil.copy(tiny_results, tmp_path / "docs" / "results" / "fake" / "results.json")
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\ntext before\n\n"
                      "<!-- sapa-results: docs/results/fake/results.json -->\n"
                      f"{body_inside}\n<!-- /sapa-results -->\n\ntext after\n")
    return readme


def test_blocks_are_generated_from_the_results_file(tmp_path, tiny_results, fake, capsys):
    readme = _doc(tmp_path, tiny_results)
    assert readme_tables.main(["--check", str(readme)]) == 1
    assert "generated results are stale" in capsys.readouterr().err
    assert readme_tables.main([str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\ntext before\n\n<!-- sapa-results:")
    assert text.endswith("<!-- /sapa-results -->\n\ntext after\n")
    with open(tiny_results) as f:
        data = json.load(f)
    assert f"`{data['command']}`" in text and "seeds 0 1 2" in text
    # every row's metric reaches the table through the means, as results.md shows them
    for name in ("nearest", "bilinear"):
        vals = [r["median_err"] for r in data["rows"] if r["upsampler"] == name]
        assert f"| {name} | 3 | " in text
        assert f"{sum(vals) / 3:.4f}" in text
    assert "| upsampler | pairs | Δ median err. ↓ | Δ mean err. ↓ |" in text
    assert "| bilinear | 3 | " in text and "against nearest" in text
    assert readme_tables.main(["--check", str(readme)]) == 0  # now up to date

    # a number edited by hand inside the block is caught
    lines = text.split("\n")
    i = next(n for n, line in enumerate(lines) if line.startswith("| nearest | 3 |"))
    lines[i] = lines[i].replace("| nearest | 3 | ", "| nearest | 3 | 9", 1)
    readme.write_text("\n".join(lines))
    assert readme_tables.main(["--check", str(readme)]) == 1
    assert readme_tables.main([str(readme)]) == 0 and readme.read_text() == text


def test_a_results_table_outside_a_block_is_refused(tmp_path, tiny_results, fake, capsys):
    readme = _doc(tmp_path, tiny_results)
    assert readme_tables.main([str(readme)]) == 0
    with open(readme, "a") as f:
        f.write("\n| upsampler | seeds | mIoU (%) |\n|---|---:|---:|\n| sapa-b | 3 | 61.25 |\n")
    capsys.readouterr()
    assert readme_tables.main(["--check", str(readme)]) == 1
    err = capsys.readouterr().err
    n = readme.read_text().split("\n").index("| upsampler | seeds | mIoU (%) |") + 1
    assert f"{readme}, line {n}: a results table outside a sapa-results block" in err


def test_show_parts_and_errors(tmp_path, tiny_results, fake, capsys):
    readme = _doc(tmp_path, tiny_results)
    readme.write_text(readme.read_text().replace("results.json -->",
                                                 "results.json show=means -->"))
    assert readme_tables.main([str(readme)]) == 0
    text = readme.read_text()
    assert "| nearest | 3 |" in text and "Δ" not in text and "Made by" not in text
    readme.write_text("<!-- sapa-results: docs/results/none/results.json -->\nx\n"
                      "<!-- /sapa-results -->\n")
    assert readme_tables.main(["--check", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"readme_tables: error: {readme}, line 1: ")
    assert "docs/results/none/results.json does not exist" in err
    readme.write_text("<!-- sapa-results: docs/results/fake/results.json -->\nx\n")
    assert readme_tables.main(["--check", str(readme)]) == 2
    assert "without <!-- /sapa-results -->" in capsys.readouterr().err


def test_the_repository_docs_are_generated_from_committed_results(capsys):
    """The README's and docs/'s result tables are up to date with docs/results/*/results.json
    and none is typed by hand."""
    docs = readme_tables.default_files(REPO)
    assert os.path.join(REPO, "README.md") in docs
    assert readme_tables.main(["--check", *docs]) == 0, capsys.readouterr().err
    blocks = 0
    for path in docs:
        with open(path) as f:
            blocks += f.read().count("<!-- sapa-results: ")
    assert blocks >= 1  # the segmentation results, at least


def test_examples_in_fenced_code_are_left_alone(tmp_path, tiny_results, fake):
    readme = _doc(tmp_path, tiny_results)
    example = ("```markdown\n<!-- sapa-results: nowhere/results.json -->\n"
               "| upsampler | seeds | x |\n<!-- /sapa-results -->\n```\n")
    readme.write_text(readme.read_text() + example)
    assert readme_tables.main([str(readme)]) == 0
    assert readme.read_text().endswith(example)
    assert readme_tables.main(["--check", str(readme)]) == 0
