"""Loading a run someone else made (or a sweep's sweep.json, or any JSON
config): the code its config names is imported from the file recorded
when the run was made (never a module of the same name in the working
directory), outside the package only with ``--trust-code``, and only a
function declared to return an ``rj.data.Task`` (or an ``rj.Cell``) is
ever called — ``sys:exit`` and ``os:abort`` are one-line errors, never
calls."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from _helpers import one_line

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax import _imports  # noqa: E402
from recurrent_jax.train import config_files, from_config_dict, rundir  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402

ROOT = Path(__file__).parents[1]

TASK = """
import dataclasses
from pathlib import Path
import jax
import recurrent_jax as rj

with open(Path(__file__).with_name("imported.log"), "a") as log:  # each import leaves a line
    log.write(__file__ + "\\n")

@dataclasses.dataclass(frozen=True)
class Options:
    seq_len: int = 4

def build(options):
    def sample(key, n):
        xs = jax.random.normal(key, (n, options.seq_len, 2))
        return rj.data.Batch(xs, xs[:, :, :1].sum(1))
    return rj.data.TaskSpec(
        input_size=2, output_size=1, kind="regression", output_mode="last", causal=False,
        sample_train=sample, eval_set=sample, baselines={}, primary_metric="mse",
        higher_is_better=False,
    )

def make_task() -> rj.data.Task:
    return rj.data.Task("first_sum", "sum of the first feature", "many-to-one", Options, build)

def unannotated():
    return make_task()

def no_cell(hidden_size, **options) -> rj.Cell:
    return None
"""

CONFIG = """
from recurrent_jax.train.config import base_config, shrink_to_smoke

def get_config(arg=None):
    config = base_config({task!r}, name="own")
    config.model.update(hidden_size=4)
    shrink_to_smoke(config)
    config.data.update(batch_size=4, eval_size=4)
    config.lock()
    return config
"""


def project(folder: Path, module: str, task_attribute="make_task") -> Path:
    """A folder with the module ``module`` (``TASK``) and a config naming it."""
    folder.mkdir(parents=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(TASK))
    config = CONFIG.format(task=f"{module}:{task_attribute}")
    (folder / "config.py").write_text(textwrap.dedent(config))
    return folder / "config.py"


def imports_of(folder: Path) -> list[str]:
    log = folder / "imported.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A finished run of a task of its own (a module beside its config)."""
    root = tmp_path_factory.mktemp("own")
    module = f"own_{uuid.uuid4().hex[:8]}"
    config = project(root / "project", module)
    experiment = from_config_dict(config_files.load_config(str(config)))
    train_and_evaluate(experiment, root / "run", progress=False)
    return root / "run", module, root / "project"


def test_a_run_records_the_file_of_the_code_it_names(own_run):
    workdir, module, folder = own_run
    saved = json.loads((workdir / rundir.CONFIG_FILE).read_text())
    assert saved["data"]["task"] == f"{module}:make_task"
    assert saved["imports"] == {f"{module}:make_task": str((folder / f"{module}.py").resolve())}


def copy_naming(own_run, tmp_path, **code) -> Path:
    """A copy of the run whose config.json names other code (with no record
    of it, as an edited run directory would)."""
    workdir = tmp_path / "copy"
    shutil.copytree(own_run[0], workdir)
    saved = json.loads((workdir / rundir.CONFIG_FILE).read_text())
    for key, spec in code.items():
        section, field = key.split("__")
        saved[section][field] = spec
    (workdir / rundir.CONFIG_FILE).write_text(json.dumps(saved))
    return workdir


@pytest.mark.parametrize(
    "code, found",
    [
        ({"data__task": "sys:exit"}, "the built-in function 'exit'"),
        ({"data__task": "adding", "model__cell": "os:abort"}, "the built-in function 'abort'"),
        ({"data__task": "adding", "model__cell": "os:getcwd"}, "built-in function 'getcwd'"),
        ({"data__task": "json:dumps"}, "the function 'dumps' without a return annotation"),
    ],
)
def test_a_run_naming_anything_else_is_refused_and_nothing_is_called(
    own_run, tmp_path, capsys, code, found
):
    workdir = copy_naming(own_run, tmp_path, **code)
    key, spec = next((k, v) for k, v in code.items() if ":" in v)  # the same task's inputs
    where = f"config.{key.replace('__', '.')}"
    for command in (["eval"], ["decode"], ["predict", "--prompt=x"]):
        err = one_line([*command, f"--workdir={workdir}"], capsys)
        assert f"{where}: the run in {workdir} names {spec!r}, code outside recurrent_jax" in err
        assert "pass --trust-code" in err
    err = one_line(["eval", f"--workdir={workdir}", "--trust-code"], capsys)  # still not called
    assert f"{where}: expected {spec!r} to be " in err and err.endswith(found)
    assert not (workdir / "eval.json").exists()


def test_importing_a_module_a_run_names_needs_the_opt_in(own_run, tmp_path, capsys):
    module = f"evil_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "elsewhere"
    project(folder, module)
    workdir = copy_naming(own_run, tmp_path, data__task=f"{module}:unannotated")
    saved = json.loads((workdir / rundir.CONFIG_FILE).read_text())
    saved["imports"] = {f"{module}:unannotated": str(folder / f"{module}.py")}
    (workdir / rundir.CONFIG_FILE).write_text(json.dumps(saved))
    err = one_line(["eval", f"--workdir={workdir}"], capsys)
    assert f"({folder / f'{module}.py'}) that importing runs; pass --trust-code" in err
    for argv in (["train", "--no-progress"], ["decode"], ["predict", "--prompt=x"]):  # the same
        assert "pass --trust-code" in one_line([*argv, f"--workdir={workdir}"], capsys)
    assert imports_of(folder) == []  # its top level never ran
    err = one_line(["eval", f"--workdir={workdir}", "--trust-code"], capsys)
    assert imports_of(folder) == [str(folder / f"{module}.py")]  # trusted: imported, once
    assert "got the function 'unannotated' without a return annotation" in err


@pytest.mark.parametrize(
    "how", ["sweep --workdir", "train --config", "sweep --config", "sweep --config grid"]
)
def test_a_sweep_or_a_json_config_naming_code_needs_the_opt_in(own_run, tmp_path, capsys, how):
    """A sweep's ``sweep.json`` (resumed with ``sweep --workdir``) and a
    JSON config given as ``--config`` are data too: the code they name is
    imported only with the opt-in, and nothing is written before."""
    module = f"evil_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "elsewhere"
    project(folder, module)
    saved = json.loads((own_run[0] / rundir.CONFIG_FILE).read_text())
    spec, key = f"{module}:make_task", "config.data.task"
    saved["data"]["task"], saved["sweep"] = spec, {"seeds": 2}
    if how.endswith("grid"):  # a value of the grid names it
        spec, key = f"{module}:no_cell", "config.sweep.grid.model.cell[1]"
        saved["data"]["task"] = "adding"
        saved["sweep"] = {"grid": {"model": {"cell": ["lstm", spec]}}}
    saved["imports"] = {spec: str(folder / f"{module}.py")}
    workdir = tmp_path / "run"
    command, given = how.split()[:2]
    if given == "--workdir":
        rundir.mark(rundir.make_workdir(workdir), rundir.SWEEP, name="own")
        config = workdir / "sweep.json"
        argv = [command]
    else:
        config = tmp_path / "c.json"
        argv = [command, f"--config={config}"]
    config.write_text(json.dumps(saved))
    before = sorted(tmp_path.rglob("*"))
    err = one_line([*argv, f"--workdir={workdir}", "--no-progress"], capsys)
    assert f"{key}: the config {config} names {spec!r}" in err
    assert f"({folder / f'{module}.py'}) that importing runs; pass --trust-code" in err
    assert imports_of(folder) == []  # its top level never ran
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    config_files.load_config(str(config), trust_code=True)
    assert imports_of(folder) == [str(folder / f"{module}.py")]  # trusted: imported, once


def test_loading_a_run_in_python_needs_the_same_opt_in(own_run):
    from recurrent_jax.train import load_run

    workdir, module, folder = own_run
    before = len(imports_of(folder))
    with pytest.raises(ValueError, match=r"pass --trust-code \(trust_code=True\)"):
        load_run(workdir)
    assert len(imports_of(folder)) == before  # not imported
    run = load_run(workdir, trust_code=True)
    assert run.config.data.task == f"{module}:make_task" and run.step == 30


def test_a_recorded_file_that_is_gone_is_a_one_line_error(own_run, tmp_path, capsys):
    workdir = copy_naming(own_run, tmp_path)
    saved = json.loads((workdir / rundir.CONFIG_FILE).read_text())
    spec = saved["data"]["task"]
    saved["imports"] = {spec: str(tmp_path / "moved" / "gone.py")}
    (workdir / rundir.CONFIG_FILE).write_text(json.dumps(saved))
    err = one_line(["eval", f"--workdir={workdir}", "--trust-code"], capsys)
    assert f"recorded {spec!r} as loaded from {str(tmp_path / 'moved' / 'gone.py')!r}" in err


def test_a_cell_constructor_that_returns_none_is_a_one_line_error(tmp_path, capsys):
    module = f"cells_{uuid.uuid4().hex[:8]}"
    config = project(tmp_path / "project", module)
    text = config.read_text().replace("hidden_size=4", f"hidden_size=4, cell='{module}:no_cell'")
    config.write_text(text)
    err = one_line(["train", f"--config={config}", f"--workdir={tmp_path / 'run'}"], capsys)
    assert f"config.model.cell: expected '{module}:no_cell' to return an rj.Cell, got None" in err
    assert not (tmp_path / "run").exists()


def test_a_return_annotation_is_read_by_name_never_evaluated(tmp_path):
    module = f"annotated_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations
            import recurrent_jax as rj
            from recurrent_jax.data import Task

            def by_name() -> Task: ...
            def dotted() -> rj.data.Task: ...
            def code() -> __import__("os").system("touch ran"): ...
            """
        )
    )
    _imports.add_search_path(tmp_path)
    load = lambda name: _imports.load_object(f"{module}:{name}", what="t")  # noqa: E731
    from recurrent_jax.data import Task

    assert _imports.declared_return(load("by_name")) is Task
    assert _imports.declared_return(load("dotted")) is Task
    assert _imports.declared_return(load("code")) is None
    with pytest.raises(ValueError, match="declared -> __import__"):
        _imports.checked_function(load("code"), "x:code", what="t", returns=Task, wanted="T")
    assert not (tmp_path / "ran").exists() and not Path("ran").exists()


def test_a_recorded_module_that_raises_on_import_is_left_unloaded(tmp_path):
    """A trusted module whose top level raises is not left half-imported in
    ``sys.modules``: once its file is mended, the same process imports it."""
    module = f"broken_{uuid.uuid4().hex[:8]}"
    file = tmp_path / f"{module}.py"
    file.write_text("raise ZeroDivisionError('at import')\n")
    admit = lambda: _imports.admit(  # noqa: E731
        f"{module}:make_task", what="data.task", source="the run", recorded=str(file), trust=True
    )
    with pytest.raises(ZeroDivisionError, match="at import"):
        admit()
    assert module not in sys.modules
    file.write_text(textwrap.dedent(TASK))
    admit()
    assert sys.modules[module].__file__ == str(file)


def test_code_inside_the_package_needs_no_opt_in():
    _imports.admit("recurrent_jax.cells:lstm", what="cell", source="the run")
    with pytest.raises(_imports.UntrustedCode, match="code outside recurrent_jax"):
        _imports.admit("json:dumps", what="data.task", source="the run")


@pytest.mark.slow
def test_a_run_loaded_from_another_folder_never_imports_that_folders_modules(own_run, tmp_path):
    """In a fresh process: a module of the run's module's name in the
    working directory is never imported; the recorded one is, with the
    opt-in only."""
    workdir, module, folder = own_run
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / f"{module}.py").write_text(textwrap.dedent(TASK))  # a look-alike that logs
    eval_json = workdir / "eval.json"
    eval_json.unlink(missing_ok=True)
    before = len(imports_of(folder))

    def run(*flags):
        argv = [sys.executable, "-m", "recurrent_jax", "eval", f"--workdir={workdir}", *flags]
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)

    refused = run()
    assert refused.returncode == 2 and "pass --trust-code" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not eval_json.exists() and len(imports_of(folder)) == before
    trusted = run("--trust-code")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(eval_json.read_text())["step"] == 30
    assert len(imports_of(folder)) == before + 1  # the recorded file, imported once
    assert imports_of(cwd) == []  # the look-alike: never
