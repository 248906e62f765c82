"""Import layers: every import of the application packages points down README.md's Layout picture.

Every module of the app packages is parsed with `ast` (nothing is imported), including imports
inside functions, and each import is checked against two tables:

- LAYERS: which of our layers a layer may import (evidence at the bottom, countersign at the top);
- BANNED: third-party packages a machine's package must not import (the counter PC has no web
  framework, the server has no PortAudio, the officer's laptop has neither NumPy nor libsndfile).

The client's NumPy/soundfile/sounddevice ban is about what an import of a client module loads,
so it follows module-level imports through our own modules (a client module importing
`evidence.audio` would pull in NumPy); imports inside functions and under `if TYPE_CHECKING:`
do not run at import time and are not followed.

The checker is tested on planted bad sources too, so the tree passing cannot mean it checks nothing.
"""

from __future__ import annotations

import ast
import importlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("evidence", "consent", "recorder", "client", "api", "retention", "countersign")

# layer -> the layers of ours it may import (besides itself)
LAYERS: dict[str, frozenset[str]] = {
    "evidence": frozenset(),
    "consent": frozenset({"evidence"}),
    "recorder": frozenset({"evidence", "consent"}),
    "client": frozenset({"evidence", "consent"}),
    "api.core": frozenset({"evidence", "consent"}),
    "retention": frozenset({"api.core", "evidence", "consent"}),
    "api": frozenset({"api.core", "retention", "evidence", "consent"}),
    # countersign/cli.py names its sub-commands' modules in strings and imports them on demand.
    "countersign": frozenset({"evidence", "consent", "recorder", "client", "api.core", "retention", "api"}),
}

SERVER_ONLY: tuple[str, ...] = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "boto3",
    "botocore",
    "psycopg",
    "uvicorn",
    "pydantic_settings",
    "prometheus_client",
)


@dataclass(frozen=True)
class Ban:
    layers: frozenset[str]
    packages: tuple[str, ...]
    module_level_only: bool  # True: what importing the module loads (followed through our modules)
    why: str


BANS: tuple[Ban, ...] = (
    Ban(
        frozenset({"recorder", "client", "evidence", "consent"}),
        SERVER_ONLY,
        False,
        "server-only dependency outside the server (extras `recorder`/`client` do not install it)",
    ),
    Ban(frozenset({"api.core", "api", "retention"}), ("sounddevice",), False, "PortAudio capture on the server"),
    Ban(
        frozenset({"client"}),
        ("numpy", "soundfile", "sounddevice"),
        True,
        "the `client` extra installs neither NumPy, libsndfile nor PortAudio",
    ),
    Ban(frozenset({"evidence"}), ("httpx",), False, "evidence/ is the offline format: no HTTP"),
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # absolute dotted name imported
    line: int
    runtime_module_level: bool  # runs when the importing module is imported


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}: {self.rule}"


def layer_of(module: str) -> str | None:
    """Our layer of a dotted module name, or None for a module that is not ours."""
    if module == "api.core" or module.startswith("api.core."):
        return "api.core"
    top = module.split(".")[0]
    return top if top in PACKAGES else None


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path = REPO) -> dict[str, Path]:
    """Every module of the app packages: dotted name -> file."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                modules[module_name(path, root)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(module: str, source: str, is_package: bool = False, known: Iterable[str] = ()) -> list[Import]:
    """Every import in a module's source, wherever it is written, as absolute names."""
    known_modules = set(known)
    tree = ast.parse(source, filename=module)
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, node.lineno, module_level))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from api import core` imports the module api.core; `from api.core.db import x` imports api.core.db
                found.append(Import(module, sub if sub in known_modules else base, node.lineno, module_level))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for child in ast.iter_child_nodes(node):
                visit(child, False)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            visit(node.test, module_level)
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, module_level)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, module_level)

    visit(tree, True)
    return found


def _parents(target: str) -> Iterator[str]:
    """A module and the packages importing it runs first: a.b.c -> a, a.b, a.b.c."""
    parts = target.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def check(sources: dict[str, tuple[str, bool]]) -> list[Violation]:
    """Every rule broken by these modules (dotted name -> (source, is_package))."""
    graph = {name: imports_of(name, src, is_pkg, sources) for name, (src, is_pkg) in sources.items()}
    violations: list[Violation] = []

    for name, found in graph.items():
        layer = layer_of(name)
        if layer is None:
            continue
        for imp in found:
            target_layer = layer_of(imp.target)
            if target_layer is not None and target_layer != layer and target_layer not in LAYERS[layer]:
                allowed = ", ".join(sorted(LAYERS[layer])) or "nothing of ours"
                violations.append(
                    Violation(name, imp.line, imp.target, f"layer {layer} -> {target_layer} (allowed: {allowed})")
                )
            top = imp.target.split(".")[0]
            for ban in BANS:
                if layer in ban.layers and top in ban.packages and not ban.module_level_only:
                    violations.append(Violation(name, imp.line, imp.target, f"banned in {layer}/: {ban.why}"))

    # Module-level bans: what importing the module loads, through our own modules' module-level imports.
    def loaded(start: str) -> dict[str, tuple[Import, list[str]]]:
        """Third-party top-level name an import of `start` loads -> (start's own import, the chain to it)."""
        result: dict[str, tuple[Import, list[str]]] = {}
        seen = {start}
        queue: deque[tuple[str, Import | None, list[str]]] = deque([(start, None, [])])
        while queue:
            current, first, chain = queue.popleft()
            for imp in graph[current]:
                if not imp.runtime_module_level:
                    continue
                hop = [*chain, f"{current}:{imp.line}"]
                if layer_of(imp.target) is None:
                    result.setdefault(imp.target.split(".")[0], (first or imp, [*hop, imp.target]))
                    continue
                for parent in _parents(imp.target):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
                    if parent in graph and parent not in seen:
                        seen.add(parent)
                        queue.append((parent, first or imp, hop))
        return result

    for name in graph:
        layer = layer_of(name)
        for ban in BANS:
            if not ban.module_level_only or layer not in ban.layers:
                continue
            for package, (first, chain) in sorted(loaded(name).items()):
                # Through another module of the same layer: that module is reported itself.
                if package in ban.packages and (
                    first.target.split(".")[0] == package or layer_of(first.target) != layer
                ):
                    rule = f"banned at import time in {layer}/: {ban.why}; via " + " -> ".join(chain)
                    violations.append(Violation(name, first.line, package, rule))
    return list(dict.fromkeys(violations))  # one line per import, however many names it imports


def tree_sources(root: Path = REPO) -> dict[str, tuple[str, bool]]:
    return {
        name: (path.read_text(encoding="utf-8"), path.name == "__init__.py") for name, path in discover(root).items()
    }


# --- the tree ---------------------------------------------------------------------------------------------


def test_every_package_is_parsed() -> None:
    modules = discover()
    for package in PACKAGES:
        assert package in modules, f"{package}/__init__.py not found"
    assert "api.core.audit" in modules
    assert "retention.routes.holds" in modules
    # the layers table covers every layer a module can be in
    assert {layer_of(name) for name in modules} <= set(LAYERS)


def test_imports_point_down_the_layers() -> None:
    violations = check(tree_sources())
    assert not violations, "import rules broken:\n  " + "\n  ".join(str(v) for v in violations)


# --- the checker catches what it must (so the test above cannot pass vacuously) ----------------------------

_CLEAN: dict[str, tuple[str, bool]] = {
    "evidence": ("", True),
    "evidence.errors": ("class FormatError(Exception): ...\n", False),
    "evidence.audio": ("import numpy\nimport soundfile\nfrom evidence.errors import FormatError\n", False),
    "evidence.audit_log": ("import json\n", False),
    "consent": ("", True),
    "api": ("", True),
    "api.core": ("", True),
    "api.core.db": ("import sqlalchemy\n", False),
    "client": ("", True),
    "retention": ("", True),
}


def _planted(name: str, source: str, is_package: bool = False) -> list[Violation]:
    return check({**_CLEAN, name: (source, is_package)})


def test_checker_passes_the_clean_fixture() -> None:
    assert check(_CLEAN) == []


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("evidence.chain", "from api.core.db import engine\n", "layer evidence -> api.core"),
        ("evidence.chain", "def f():\n    import retention.policy\n", "layer evidence -> retention"),
        ("consent.records", "from client import http\n", "layer consent -> client"),
        ("api.core.keys", "from retention import policy\n", "layer api.core -> retention"),
        ("api.core.keys", "from ..deps import x\n", "layer api.core -> api"),
        ("api.core.storage", "from ...routes import evidence\n", "layer api.core -> api"),
        ("retention.job", "from api.ingest import accept\n", "layer retention -> api"),
        ("retention.job", "from api import deps\n", "layer retention -> api"),
        ("client.evidence", "async def f():\n    from recorder.home import DeviceHome\n", "layer client -> recorder"),
        ("recorder.cli", "import api.app\n", "layer recorder -> api"),
        ("recorder.cli", "def f():\n    import fastapi\n", "banned in recorder/"),
        ("evidence.chain", "import httpx\n", "banned in evidence/"),
        ("consent.records", "from sqlalchemy.orm import Session\n", "banned in consent/"),
        ("client.http", "from botocore.exceptions import ClientError\n", "banned in client/"),
        ("retention.job", "def f():\n    import sounddevice\n", "banned in retention/"),
        ("api.core.db", "import sounddevice\n", "banned in api.core/"),
        ("client.audit", "import numpy\n", "banned at import time in client/"),
        ("client.audit", "from evidence.audio import decode\n", "via client.audit:1 -> evidence.audio:1 -> numpy"),
        ("client.audit", "from evidence import audio\n", "via client.audit:1 -> evidence.audio:1 -> numpy"),
    ],
)
def test_checker_catches_a_planted_bad_import(name: str, source: str, expected: str) -> None:
    violations = _planted(name, source, is_package=name == "api.core.storage")
    assert any(expected in str(v) for v in violations), f"{expected!r} not caught in {violations}"
    assert all(v.module == name for v in violations), violations


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("api.routes.evidence", "from retention.routes import holds\nfrom api.core.db import engine\n"),
        ("retention.job", "from api.core import audit\nfrom evidence.chain import x\n"),
        ("recorder.capture", "import sounddevice\nimport numpy\nimport httpx\nfrom consent import records\n"),
        ("client.audit", "from evidence.audit_log import verify_export\nimport httpx\n"),
        ("client.audit", "def f():\n    import numpy\n"),  # only when the command runs: not at import time
        ("client.audit", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import numpy\n"),
        ("countersign.cli", "import api.app\nimport recorder.cli\nimport client.admin\n"),
        ("evidence.chain", "from . import errors\nfrom .errors import FormatError\n"),
    ],
)
def test_checker_allows_imports_down_the_layers(name: str, source: str) -> None:
    assert _planted(name, source) == []


def test_import_time_ban_follows_our_modules_and_names_the_culprit() -> None:
    sources = {
        **_CLEAN,
        "evidence.chain": ("from evidence.errors import FormatError\nfrom evidence.audio import decode\n", False),
        "client.http": ("import httpx\nfrom evidence.chain import verify_chain\n", False),
        "client.audit": ("from client.http import ApiClient\n", False),
    }
    violations = check(sources)
    # client.http is the culprit (line 2, through evidence.chain); client.audit imports it and is not repeated
    assert [(v.module, v.line, v.target) for v in violations] == [
        ("client.http", 2, "numpy"),
        ("client.http", 2, "soundfile"),
    ]
    assert "client.http:2 -> evidence.chain:2 -> evidence.audio:1 -> numpy" in str(violations[0])


def test_relative_imports_are_resolved() -> None:
    found = imports_of("api.core.storage.s3", "from ..audit import x\nfrom . import interface\n", known=["a"])
    assert [i.target for i in found] == ["api.core.audit", "api.core.storage"]
    found = imports_of("api.core.storage", "from .s3 import S3Store\n", is_package=True)
    assert [i.target for i in found] == ["api.core.storage.s3"]


# --- countersign --help and each sub-app's own help say the same ------------------------------------------


def _subcommands() -> dict[str, tuple[str, str, str]]:
    from countersign.cli import SUBCOMMANDS

    return SUBCOMMANDS


@pytest.mark.parametrize("name", list(_subcommands()))
def test_subcommand_help_matches_its_app(name: str) -> None:
    module_name_, _, help_line = _subcommands()[name]
    app = importlib.import_module(module_name_).app
    own = app.info.help
    assert isinstance(own, str), f"{module_name_}.app has no help= of its own"
    assert help_line == own, (
        f"countersign/cli.py SUBCOMMANDS[{name!r}] says {help_line!r} but {module_name_}.app says {own!r}: "
        "`countersign --help` and `countersign " + name + " --help` would disagree"
    )
