"""``sapa compare`` under ``torchrun`` with 2 CPU processes (gloo): DistributedDataParallel
training, evaluation sharded across the processes, results written once by rank 0."""
from compare_cli import evaluate_saved, read_results, torchrun


def test_two_cpu_processes(tmp_path):
    out = str(tmp_path / "ddp")
    proc = torchrun("--quick", "--upsamplers", "sapa-b", "--iters", "3",
                    "--image-size", "32", "--widths", "8,16,32",
                    "--eval-every", "3", "--num-train", "16", "--num-val", "7", "--no-figures",
                    "--device", "cpu", "--out", out, timeout=240)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.count("sapa compare: done") == 1  # only rank 0 reports

    data = read_results(out)
    [row] = data["rows"]
    assert row["world_size"] == 2 and data["environment"]["world_size"] == 2

    # the reported metrics (7 validation images split 4 + 3 over the ranks, counts summed)
    # are those of the saved model evaluated in one process
    m = evaluate_saved(out, row, "sapa-b")
    for k in ("miou", "biou", "acc", "iou_per_class"):
        assert m[k] == row[k], k
