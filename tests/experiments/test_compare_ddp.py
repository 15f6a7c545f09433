"""``sapa compare`` under ``torchrun`` with 2 CPU processes (gloo): DistributedDataParallel
training, evaluation sharded across the processes, results written once by rank 0."""
import json
import os
import subprocess
import sys

import torch

from sapa.experiments import distributed as D
from sapa.experiments.trainer import evaluate
from sapa.tasks import get_task


def test_two_cpu_processes(tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sapa", "compare", "--quick", "--upsamplers", "sapa-b", "--iters", "3",
           "--image-size", "32", "--widths", "8,16,32",
           "--eval-every", "3", "--num-train", "16", "--num-val", "7", "--no-figures",
           "--device", "cpu", "--out", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.count("sapa compare: done") == 1  # only rank 0 reports

    with open(os.path.join(out, "results.json")) as f:
        data = json.load(f)
    [row] = data["rows"]
    assert row["world_size"] == 2 and data["environment"]["world_size"] == 2

    # the reported metrics (7 validation images split 4 + 3 over the ranks, counts summed)
    # are those of the saved model evaluated in one process
    ck = torch.load(os.path.join(out, row["checkpoint"]), weights_only=False)
    task = get_task(data["config"]["task"])
    train_set, val_set = task.build_datasets(data["config"])
    model = task.build_model(data["config"], "sapa-b", train_set)
    model.load_state_dict(ck["model"])
    m = evaluate(task, model, val_set, data["config"], D.DistContext())
    for k in ("miou", "biou", "acc", "iou_per_class"):
        assert m[k] == row[k], k
