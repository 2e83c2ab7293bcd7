"""Code named by import path, ``"package.module:name"``: a researcher's
own task or cell in a config (``data.task = "my_tasks:make_task"``,
``model.cell = "my_cells:my_cell"``).

Finding: a module is looked up on ``sys.path``, then in the working
directory and in the folders of the config files loaded so far
(``add_search_path``), so a module beside the config file is importable
without installing it. A run directory records the file each module was
loaded from (``recorded_file``); loading that run imports it from that file
only (``admit`` with ``recorded``), never from a module found elsewhere.

Trust: importing a module runs its top level, and a function found is
called. ``admit`` finds a module's file *without running it* and refuses
one outside the installed recurrent_jax package unless trusted
(``UntrustedCode``, one line naming the file and the opt-in).
``checked_function`` calls only a Python function whose return annotation
is the type wanted (``def make_task() -> rj.data.Task``), checked before
the call — never a builtin such as ``sys.exit`` or ``os.abort``, a class or
any other callable — and checks the value it returns.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TRUST_FLAG = "--trust-code"
_SEARCH_PATHS: list[str] = []


class UntrustedCode(ValueError):
    """A config from a file that is not Python names code outside the
    package, and loading it was not trusted."""


def is_import_path(spec) -> bool:
    """Whether ``spec`` has the form ``"module:name"``."""
    return isinstance(spec, str) and spec.count(":") == 1 and all(spec.split(":"))


def add_search_path(folder) -> None:
    """Makes the modules in ``folder`` importable by import paths."""
    folder = str(Path(folder).resolve())
    if folder not in _SEARCH_PATHS:
        _SEARCH_PATHS.append(folder)


def _split(spec: str, what: str) -> tuple[str, str]:
    if not is_import_path(spec):
        raise ValueError(f"{what}: expected a registered name or 'module:name', got {spec!r}")
    module, attribute = spec.split(":")
    return module, attribute


def _extra_paths() -> list[str]:
    return list(dict.fromkeys([str(Path.cwd()), *_SEARCH_PATHS]))


# --- finding a module's file without running it -------------------------------------


def locate(spec: str, *, what: str, search: bool = True) -> Path | None:
    """The file of the module ``spec`` names, found without running any of
    it: on ``sys.path`` (and, when ``search``, in the working directory and
    the config folders); None for a built-in or frozen module. A module
    that is not found is a ValueError naming where it was looked for."""
    module, _ = _split(spec, what)
    top, *rest = module.split(".")
    found = _find_top(top, _extra_paths() if search else [])
    for i in range(len(rest)):
        locations = found.submodule_search_locations if found is not None else None
        name = ".".join([top, *rest[: i + 1]])
        found = _find_sub(name, locations)
    if found is None:
        where = f"and in {', '.join(_extra_paths())}" if search else "only (no file recorded)"
        raise ValueError(
            f"{what}: cannot find the module {module!r} of {spec!r}; looked on sys.path {where}"
        )
    return Path(found.origin).resolve() if found.has_location and found.origin else None


def _find_top(name: str, extra: list[str]):
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__spec__", None) is not None:
        return loaded.__spec__
    try:
        found = importlib.util.find_spec(name)  # every finder; runs no module of its own
    except (ImportError, ValueError):
        found = None
    return found or (importlib.machinery.PathFinder.find_spec(name, extra) if extra else None)


def _find_sub(name: str, locations):
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__spec__", None) is not None:
        return loaded.__spec__
    if locations is None:
        return None
    return importlib.machinery.PathFinder.find_spec(name, list(locations))


def inside_package(file: Path | None) -> bool:
    """Whether ``file`` is part of the installed recurrent_jax package."""
    return file is not None and file.is_relative_to(PACKAGE_DIR)


# --- trust -------------------------------------------------------------------------------


def admit(
    spec: str,
    *,
    what: str,
    source: str,
    recorded: str | None = None,
    trust: bool = False,
    search: bool = True,
) -> None:
    """Checks, before anything of it runs, that the module of ``spec`` (a
    value of ``source``, e.g. "the run in runs/x") may be imported: one
    inside the package may; another only when ``trust``. ``recorded`` (the
    file the run recorded for it) is then imported from that file, not
    looked up; without a record the module is found as ``locate`` finds it
    (``search``: in the working directory and config folders too)."""
    module, _ = _split(spec, what)
    if recorded is not None:
        file = Path(recorded)
        if not file.is_absolute() or not file.is_file():
            raise ValueError(
                f"{what}: {source} recorded {spec!r} as loaded from {recorded!r}, which is "
                "not a file here"
            )
        file = file.resolve()
    else:
        file = locate(spec, what=what, search=search)
    if not inside_package(file) and not trust:
        raise UntrustedCode(
            f"{what}: {source} names {spec!r}, code outside recurrent_jax "
            f"({file if file is not None else 'a built-in module'}) that importing runs; "
            f"pass {TRUST_FLAG} (trust_code=True) only if you trust it"
        )
    if recorded is not None:
        _import_from(module, file, what)


def _import_from(module: str, file: Path, what: str) -> None:
    """Imports ``module`` from ``file`` (its package from the same root)."""
    parts = module.split(".")
    stem = file.parent if file.name == "__init__.py" else file.with_suffix("")
    if file.suffix != ".py" or stem.parts[-len(parts) :] != tuple(parts):
        raise ValueError(f"{what}: the recorded file {str(file)!r} does not hold module {module!r}")
    root = str(stem.parents[len(parts) - 1])
    if module not in sys.modules:
        if root not in sys.path:
            sys.path.append(root)  # the module's own imports of its neighbours
        if parts[0] not in sys.modules:
            _exec_top(parts[0], root, f"{what}: cannot import {module!r} from {str(file)!r}")
        if locate(f"{module}:_", what=what, search=False) != file:  # before it runs
            raise ValueError(
                f"{what}: module {module!r} would not be loaded from the recorded "
                f"{str(file)!r} (its package is loaded from elsewhere); load the run in a "
                "new process"
            )
        importlib.import_module(module)
    got = getattr(sys.modules[module], "__file__", None)
    if got is None or Path(got).resolve() != file:
        raise ValueError(
            f"{what}: module {module!r} is already loaded from {got}, not the recorded "
            f"{str(file)!r}; load the run in a new process"
        )


def _exec_top(name: str, root: str, missing: str) -> None:
    """Imports the top-level module ``name`` found in ``root`` only."""
    found = importlib.machinery.PathFinder.find_spec(name, [root])
    if found is None:
        raise ValueError(missing)
    loaded = importlib.util.module_from_spec(found)
    sys.modules[name] = loaded
    try:
        found.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[name]
        raise


def recorded_file(spec: str) -> str | None:
    """The file the (already imported) module of ``spec`` was loaded from,
    as a run directory records it; None for a module of the package."""
    module = sys.modules.get(spec.split(":")[0])
    file = getattr(module, "__file__", None)
    if file is None or inside_package(Path(file).resolve()):
        return None
    return str(Path(file).resolve())


# --- the object and the call -----------------------------------------------------------


def load_object(spec: str, *, what: str):
    """The object ``spec`` (``"module:name"``, dotted names allowed on both
    sides) names, without calling it; a ValueError naming ``what`` and what
    was tried otherwise."""
    module_name, attribute = _split(spec, what)
    extra = _extra_paths()
    sys.path.extend(p for p in extra if p not in sys.path)  # the module's own imports too
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"{what}: cannot import {module_name!r} for {spec!r} ({error}); looked on sys.path "
            f"and in {', '.join(extra)}"
        ) from None
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ValueError(f"{what}: module {module_name!r} has no {attribute!r} (from {spec!r})")
        value = getattr(value, part)
    return value


def checked_function(
    found,
    spec: str,
    *,
    what: str,
    returns: type,
    wanted: str,
    args: tuple = (),
    or_value: bool = False,
) -> Callable:
    """``found`` (what ``spec`` names) as a function that is called only if
    it is a Python function declared to return ``returns`` (its return
    annotation, read without calling it; ``wanted``: how messages name the
    type, "rj.data.Task") and accepting ``args``; the wrapper checks that
    each call does return a ``returns``. Anything else is a ValueError
    naming ``what`` and what was found (``or_value``: the message says a
    ``returns`` itself is accepted too)."""
    accepted = f"a function declared `-> {wanted}`"
    accepted = f"an {wanted} or {accepted}" if or_value else accepted
    if not inspect.isfunction(found):
        raise ValueError(f"{what}: expected {spec!r} to be {accepted}, got {_describe(found)}")
    declared = declared_return(found)
    if not (isinstance(declared, type) and issubclass(declared, returns)):
        annotation = found.__annotations__.get("return")
        says = "without a return annotation" if annotation is None else f"declared -> {annotation}"
        raise ValueError(
            f"{what}: expected {spec!r} to be {accepted}, got the function "
            f"{found.__qualname__!r} {says}"
        )
    try:
        inspect.signature(found).bind(*args)
    except TypeError as error:
        raise ValueError(f"{what}: {spec!r} cannot be called with {args!r} ({error})") from None

    @functools.wraps(found)  # its signature: a config's options are checked against it
    def call(*call_args, **options):
        made = found(*call_args, **options)
        if not isinstance(made, returns):
            raise ValueError(f"{what}: expected {spec!r} to return an {wanted}, got {made!r:.200}")
        return made

    return call


def declared_return(function) -> object:
    """The return annotation of ``function``: the object it names (a
    postponed annotation, ``"rj.data.Task"``, resolved by name in the
    function's module, never evaluated), or None."""
    annotation = function.__annotations__.get("return")
    if not isinstance(annotation, str):
        return annotation
    head, *rest = annotation.strip().split(".")
    if not all(part.isidentifier() for part in (head, *rest)):
        return None
    value = function.__globals__.get(head)
    for part in rest:
        value = getattr(value, part, None)
    return value


def _describe(found) -> str:
    if inspect.isbuiltin(found):
        return f"the built-in function {getattr(found, '__qualname__', found)!r}"
    if inspect.isclass(found):
        return f"the class {found.__qualname__!r}"
    return f"{type(found).__name__} {found!r:.120}"
