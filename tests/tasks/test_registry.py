"""The task registry: ``get_task`` imports a task's package only when asked, and every way a
task can be missing is a one-line ``UsageError`` that lists the tasks there are."""
import subprocess
import sys

import pytest

import sapa.tasks as tasks
from sapa.errors import UsageError
from sapa.tasks.base import Column, Task, check_task
from sapa.tasks.segmentation import TASK as SEGMENTATION


def test_segmentation_is_the_registered_task_and_fills_the_contract():
    assert tasks.get_task("segmentation") is SEGMENTATION
    check_task(SEGMENTATION)
    assert tasks.list_tasks()[:4] == ["segmentation", "depth", "matting", "detection"]
    assert "segmentation" in tasks.available_tasks()


def test_importing_the_registry_imports_no_task():
    code = ("import sys, sapa.tasks; "
            "assert not [m for m in sys.modules if m.startswith('sapa.tasks.segmentation')]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unknown_task():
    with pytest.raises(UsageError, match="unknown task 'nope'; known: segmentation, depth"):
        tasks.get_task("nope")


def _write_package(root, name, body):
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(body)


def test_a_task_that_is_not_there_or_lacks_a_dependency(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(tasks.TASKS, "ghost", "sapa_test_ghost_task")
    with pytest.raises(UsageError, match="has no sapa_test_ghost_task yet; available: segmentation"):
        tasks.get_task("ghost")
    assert "ghost" not in tasks.available_tasks()

    _write_package(tmp_path, "sapa_test_needy_task", "import sapa_test_not_installed_pkg\n")
    monkeypatch.setitem(tasks.TASKS, "needy", "sapa_test_needy_task")
    with pytest.raises(UsageError, match="needs the Python package 'sapa_test_not_installed_pkg'"):
        tasks.get_task("needy")

    # a missing module of sapa itself is a bug, not the user's: the import error propagates
    _write_package(tmp_path, "sapa_test_broken_task", "import sapa.tasks.no_such_module\n")
    monkeypatch.setitem(tasks.TASKS, "broken", "sapa_test_broken_task")
    with pytest.raises(ModuleNotFoundError) as exc:
        tasks.get_task("broken")
    assert not isinstance(exc.value, UsageError)

    _write_package(tmp_path, "sapa_test_taskless", "TASK = None\n")
    monkeypatch.setitem(tasks.TASKS, "taskless", "sapa_test_taskless")
    with pytest.raises(TypeError, match="must be a sapa.tasks.base.Task"):
        tasks.get_task("taskless")


class _Half(Task):
    name = "half"
    primary = "err"
    lower_is_better = False  # disagrees with its column
    columns = (Column("err", "err", lower_is_better=True),)
    default_upsamplers = quick_upsamplers = ("nearest",)
    presets = dict(SEGMENTATION.presets)


def test_register_checks_the_contract():
    with pytest.raises(TypeError, match="same lower_is_better"):
        tasks.register_task(_Half())
    ok = _Half()
    ok.lower_is_better = True
    ok.presets = {k: v for k, v in SEGMENTATION.presets.items() if k != "lr"}
    with pytest.raises(TypeError, match=r"missing \['lr'\]"):
        tasks.register_task(ok)
    ok.presets = SEGMENTATION.presets
    tasks.register_task(ok)
    try:
        assert tasks.get_task("half") is ok and "half" in tasks.list_tasks()
    finally:
        tasks.unregister_task("half")
    assert "half" not in tasks.list_tasks()
