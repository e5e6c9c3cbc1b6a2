"""Sphinx configuration for the pplx documentation.

Build with ``make docs`` or ``sphinx-build -W --keep-going -b html docs docs/_build/html``;
``tests/test_docs.py`` runs the same build with warnings as errors.

The API reference is generated here, at configuration time: every public module under
``pplx/`` and ``inference/`` (installed as ``pplx.inference``) gets a page in
``docs/api/generated/`` (git-ignored) with an ``automodule`` directive. A module therefore
appears in the reference as soon as its file exists, and a module that fails to import fails
the build instead of silently disappearing.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATED = DOCS / "api" / "generated"

# -- Project -------------------------------------------------------------------------------------

project = "pplx"
author = "pplx developers"
copyright = "pplx developers"


def _version() -> str:
    try:
        from importlib.metadata import version as installed_version

        return installed_version("pyro-pplx")
    except Exception:  # not installed: read it off the source tree
        for line in (ROOT / "pyproject.toml").read_text().splitlines():
            if line.startswith("version"):
                return line.split("=", 1)[1].strip().strip('"')
    return "unknown"


release = _version()
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
]
# No intersphinx: the build has to work without network access.

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
nitpicky = False
pygments_style = "sphinx"
default_role = "py:obj"

# -- autodoc / napoleon --------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
autoclass_content = "class"

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False
# ``Attributes:`` sections become field lists rather than ``.. attribute::`` entries, so a
# dataclass field that also carries a ``#:`` comment is not described twice.
napoleon_use_ivar = True

# -- HTML ----------------------------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"pplx {release}"
html_theme_options = {
    "description": "Programmable inference for Pyro",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []

# Third-party libraries announce API changes with FutureWarning/DeprecationWarning at import
# time (ArviZ does); they are not documentation problems, keep the build output quiet.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

# -- API reference generation --------------------------------------------------------------------

# Import package -> source folder (setup.py / pyproject map ``inference/`` to ``pplx.inference``).
PACKAGES = {
    "language": ("pplx", ROOT / "pplx"),
    "engines": ("pplx.inference", ROOT / "inference"),
}


def discover_modules(package: str, folder: Path) -> list[tuple[str, bool]]:
    """Public modules under ``folder`` as ``(dotted name, is_package)``, parents first.

    Private modules (a path part starting with ``_``, which includes ``__main__``) and folders
    that are not packages (no ``__init__.py``) are skipped.
    """
    found = []
    for path in folder.rglob("*.py"):
        rel = path.relative_to(folder)
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        parent = folder
        ok = True
        for part in rel.parts[:-1]:
            parent = parent / part
            if not (parent / "__init__.py").is_file():
                ok = False
                break
        if not ok:
            continue
        found.append((tuple(parts), ".".join([package, *parts]), is_package))
    # The engines live in their own folder; never document them twice from the language side.
    found = [item for item in found if item[0][:1] != ("inference",) or package != "pplx"]
    return [(name, is_package) for _, name, is_package in sorted(found)]


def _underline(title: str, char: str = "=") -> str:
    return f"{title}\n{char * len(title)}\n"


def _defined_as(home: str, name: str, obj: object) -> bool:
    """Whether module ``home`` holds ``obj`` under ``name`` (a re-export, not an alias)."""
    try:
        return getattr(importlib.import_module(home), name, None) is obj
    except Exception:
        return False


def _reexports(package: str, documented: set[str]) -> tuple[dict[str, str], list[str]]:
    """Split a module's ``__all__`` into links to documented homes and objects to document here.

    Returns reST: bullet lines, by name, for re-exported names that are documented in the
    module that defines them, and ``auto*`` directives for names whose home is not documented
    (a private module, or an object defined in the package itself).
    """
    try:
        module = importlib.import_module(package)
    except Exception:  # autodoc reports the import error as a warning
        return {}, []
    links, here = {}, []
    for name in getattr(module, "__all__", ()):
        if name.startswith("_"):
            continue
        obj = getattr(module, name, None)
        if obj is None:
            continue
        home = getattr(obj, "__module__", None)
        if inspect.ismodule(obj):
            links[name] = f"* :mod:`{obj.__name__}`"
        elif home and home != package and not _defined_as(home, name, obj):
            continue  # an instance of a class from elsewhere, or an alias: autodoc's job
        elif home and home != package and home in documented:
            links[name] = f"* :obj:`{name} <{home}.{name}>` (documented in :mod:`{home}`)"
        elif home and home != package:
            if inspect.isclass(obj):
                directive = f".. autoclass:: {package}.{name}\n   :members:\n"
            elif callable(obj):
                directive = f".. autofunction:: {package}.{name}\n"
            else:
                directive = f".. autodata:: {package}.{name}\n"
            here.append(directive)
    return links, here


def _module_page(name: str, is_package: bool, documented: set[str]) -> str:
    lines = [_underline(f"``{name}``"), f".. automodule:: {name}", "   :members:"]
    links, here = _reexports(name, documented)
    if is_package:
        # A package re-exports its API; document each object once, in the module defining it.
        lines.append("   :ignore-module-all:")
    else:
        here = []  # automodule documents a module's own __all__
        if links:  # names it re-exports from documented modules: link them, don't repeat
            lines.append(f"   :exclude-members: {', '.join(links)}")
    text = "\n".join(lines) + "\n"
    if links:
        text += "\n" + _underline("Re-exported names", "-") + "\n"
        bullets = "\n".join(links.values())
        text += f"Importable as ``from {name} import ...``:\n\n" + bullets + "\n"
    if here:
        text += "\n" + _underline("Defined elsewhere, exported here", "-") + "\n"
        text += "\n".join(here)
    return text


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def generate_api_pages() -> None:
    """Write one page per public module into ``docs/api/generated/<layer>/``."""
    modules = {
        layer: discover_modules(package, folder) for layer, (package, folder) in PACKAGES.items()
    }
    documented = {name for found in modules.values() for name, _ in found}
    for layer, found in modules.items():
        folder = GENERATED / layer
        wanted = set()
        for name, is_package in found:
            path = folder / f"{name}.rst"
            wanted.add(path)
            _write_if_changed(path, _module_page(name, is_package, documented))
        if folder.is_dir():
            for stale in folder.glob("*.rst"):
                if stale not in wanted:
                    stale.unlink()


generate_api_pages()


# -- Cross-references to re-exported names --------------------------------------------------------


def _lookup(dotted: str) -> object | None:
    """The pplx object named ``dotted`` (module path plus attributes), or ``None``."""
    if not dotted.startswith("pplx"):
        return None
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _resolve_reexport(app, env, node, contnode):
    """Resolve ``pplx.inference.Result`` (a re-export) to where the object is documented.

    Each object is documented once, in the module that defines it; a docstring may still name it
    by its public path (``pplx.inference.Result``) or by the name it is imported under in the
    current module (``Result``). Both are redirected to the defining module's entry.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    module = node.get("py:module")
    candidates = [target] + ([f"{module}.{target}"] if module else [])
    for candidate in candidates:
        obj = _lookup(candidate)
        home = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if not (home and qualname and home.startswith("pplx")):
            continue
        canonical = f"{home}.{qualname}"
        if canonical == candidate:
            continue
        domain = env.get_domain("py")
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode
        )
    return None


def setup(app) -> None:
    app.connect("missing-reference", _resolve_reexport)
