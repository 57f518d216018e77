"""The project's structural rules, read from the source tree (ast and files; torch is never imported here).

- Size: no module in src/ over 400 lines; no function or method in src/, tests/ or scripts/ over 50 lines
  (the `def` line to the last line of the body; decorators are not counted).
- Imports among latent_scale modules. An import inside a function, or under `if TYPE_CHECKING:`, is still a
  dependency, so the direction rules (nothing imports the CLI or the estimation from below; stats knows
  nothing of models or files; models nothing of data) count every import. Cycles count only the imports
  that run when a module is imported (module level, TYPE_CHECKING blocks excluded): an import deferred
  into a function is how a heavy or circular dependency is meant to be broken.
- schema is the one place that knows the result JSON: the result's own keys are spelled only there.
- Module names do not mislead: none shadows the standard library or a dependency, none is a "pipeline".
- Fast start: the CLI, the options and every source module import no heavy library at module level,
  directly or through the latent_scale modules they import (the CLI builds its help from every source's
  options); one subprocess checks it for real.
- No block of six or more lines repeated in src/ or tests/ (the workplace's `duplicates` command; the test
  is skipped where the command is not installed).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "latent_scale"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50

# Libraries that take seconds to import, or are optional extras: never at module level of a fast module.
HEAVY = ("torch", "torchvision", "torchaudio", "diffusers", "transformers", "accelerate", "numpy", "av", "PIL",
         "pyarrow", "datasets", "matplotlib", "safetensors.torch")
# The modules the CLI imports before it knows what a command needs (sources: its --help lists their options).
FAST = ("latent_scale", "latent_scale.cli", "latent_scale.options", "latent_scale.fields",
        "latent_scale.errors", "latent_scale.version",
        # commands that read results: a mistyped path or a damaged file is answered before torch loads
        "latent_scale.apply", "latent_scale.compare", "latent_scale.merge", "latent_scale.report")
SLOW_SOURCES = ("latent_scale.sources.batches",)  # the DataLoader side of the sources, used by the estimation

# DESIGN.md, "Architecture": data flows one way.
MODEL_SIDE = ("models", "encode", "hub")
FILE_SIDE = ("sources", "formats", "saved_latents", "reading", "outputs", "checkpoint", "identity", "schema")
DATA_SIDE = ("sources", "formats", "saved_latents")
# (who, what it may not import, who is exempt, because): module paths below latent_scale ("" = all).
DIRECTION = [
    ("", ("cli",), {"__main__"}, "only __main__ runs the command line"),
    ("", ("estimation",), {"", "__main__", "cli"},
     "only the command line (and the package's lazy API) starts an estimation"),
    ("stats", MODEL_SIDE + FILE_SIDE, set(), "stats knows nothing of models or files"),
    ("models", DATA_SIDE, set(), "models know nothing of data"),
]

# Keys that exist only in a result (schema/keys.py); any other module reads them as typed fields.
RESULT_ONLY_KEYS = {"scale_factor_ci95", "scale_factor_ci95_dataset", "state_sha256", "num_elements",
                    "num_images", "config_normalised", "estimates", "references"}
DEPENDENCIES = {"torch", "torchvision", "diffusers", "accelerate", "safetensors", "tqdm", "typer", "av", "tomli",
                "pytest", "skimage", "hypothesis", "matplotlib", "pyarrow", "datasets", "numpy", "PIL"}


@dataclass(frozen=True)
class Import:
    """One import statement's target: a latent_scale module (resolved) or another top-level library."""

    source: str
    target: str
    line: int
    runs_on_import: bool  # at module level and not under `if TYPE_CHECKING:`


@cache
def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: Iterable[ast.AST], runs: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Every node below `body`, with whether it runs when the module is imported."""
    for node in body:
        yield node, runs
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, False)
            yield from _statements(node.orelse, runs)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _statements(ast.iter_child_nodes(node), False)
        else:
            yield from _statements(ast.iter_child_nodes(node), runs)


def _resolve(name: str, node: ast.ImportFrom | ast.Import, alias: ast.alias) -> list[str]:
    """The modules one imported name stands for (a submodule where `from pkg import sub` names one)."""
    if isinstance(node, ast.Import):
        return [alias.name]
    package = name.split(".") if modules()[name].name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - node.level + 1] if node.level else []
    origin = ".".join(base + ([node.module] if node.module else []))
    submodule = f"{origin}.{alias.name}"
    return [submodule] if submodule in modules() else [origin]


@cache
def imports(name: str) -> tuple[Import, ...]:
    """Every import in module `name`; latent_scale targets resolved, others by their dotted name."""
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    found = []
    for node, runs in _statements(tree.body, True):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
            for alias in node.names:
                found += [Import(name, target, node.lineno, runs) for target in _resolve(name, node, alias)]
    return tuple(found)


def _inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its qualified name (Class.method, outer.inner)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qualified = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield qualified, node
            yield from _functions(node, qualified + ".")
        else:
            yield from _functions(node, prefix)


def test_no_module_is_over_400_lines() -> None:
    long = {_rel(p): n for p in modules().values() if (n := len(p.read_text(encoding="utf-8").splitlines()))
            > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_50_lines() -> None:
    long = []
    for folder in ("src", "tests", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for qualified, node in _functions(ast.parse(path.read_text(encoding="utf-8"))):
                if (lines := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long.append(f"{_rel(path)}:{node.lineno} {qualified} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = stack[stack.index(node):]
                    del stack[stack.index(node):]
                    if len(component) > 1 or node in graph[node]:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycles() -> None:
    """Among the imports that run when a module is imported (see the module docstring)."""
    graph = {name: {i.target for i in imports(name) if i.runs_on_import and i.target in modules()}
             for name in modules()}
    report = []
    for component in _cycles(graph):
        edges = [f"{i.source}:{i.line} -> {i.target}" for name in component for i in imports(name)
                 if i.runs_on_import and i.target in component]
        report.append(" | ".join(component) + "\n    " + "\n    ".join(edges))
    assert not report, "import cycles:\n" + "\n".join(report)


def _qualified(short: str) -> str:
    return f"{PACKAGE}.{short}" if short else PACKAGE


def test_imports_flow_one_way() -> None:
    wrong = []
    for who, forbidden, exempt, why in DIRECTION:
        for name in modules():
            if not _inside(name, _qualified(who)) or name in {_qualified(e) for e in exempt}:
                continue
            wrong += [f"{name}:{i.line} imports {i.target} ({why})" for i in imports(name)
                      if any(_inside(i.target, _qualified(f)) for f in forbidden) and not _inside(i.target, name)]
    assert not wrong, "imports against the flow of DESIGN.md:\n" + "\n".join(wrong)


def test_only_schema_spells_the_result_keys() -> None:
    """schema is the one place that knows the JSON: others read typed fields or the KEY_* constants."""
    spelled = []
    for name, path in modules().items():
        if _inside(name, f"{PACKAGE}.schema"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in RESULT_ONLY_KEYS:
                spelled.append((_rel(path), node.lineno, node.value))
    assert not spelled, "result keys spelled outside schema/:\n" + "\n".join(
        f"{path}:{line} {key!r}" for path, line, key in sorted(spelled))


def test_module_names_do_not_mislead() -> None:
    """No module shadows the standard library or a dependency (like `io`, `datasets`) or is a 'pipeline'."""
    taken = set(sys.stdlib_module_names) | DEPENDENCIES | {"pipeline"}
    wrong = [_rel(path) for name, path in modules().items() if name.rsplit(".", 1)[-1] in taken]
    assert not wrong, f"misleading module names: {wrong}"


def fast_modules() -> list[str]:
    """The CLI's own modules and every source module (the help lists their options)."""
    sources = [n for n in modules() if _inside(n, f"{PACKAGE}.sources") and n not in SLOW_SOURCES]
    return [*FAST, *sources]


def _heavy_imports(name: str) -> list[str]:
    """Heavy libraries imported when `name` is imported: through module-level imports of latent_scale
    modules and the packages above them, each with the chain that leads there."""
    chains = {name: [name]}
    todo = [name]
    heavy: dict[str, None] = {}  # in order, once each
    while todo:
        current = todo.pop()
        parents = [".".join(current.split(".")[:k]) for k in range(1, current.count(".") + 1)]
        for target, line in [(p, 0) for p in parents] + [(i.target, i.line) for i in imports(current)
                                                         if i.runs_on_import]:
            if target in modules() and target not in chains:
                chains[target] = [*chains[current], target]
                todo.append(target)
            elif any(_inside(target, h) for h in HEAVY):
                heavy[f"{' -> '.join(chains[current])}:{line} imports {target}"] = None
    return list(heavy)


@pytest.mark.parametrize("name", fast_modules())
def test_fast_modules_import_no_heavy_library_at_module_level(name: str) -> None:
    heavy = _heavy_imports(name)
    assert not heavy, f"{name} imports heavy libraries when imported:\n" + "\n".join(heavy)


PROBE = """
import json, sys
heavy = {heavy!r}
loaded = lambda: sorted(h for h in heavy if h in sys.modules)
import latent_scale.cli
after_import = loaded()
try:
    latent_scale.cli.main(["estimate", "--help"])
except SystemExit:
    pass
print(json.dumps({{"import latent_scale.cli": after_import, "latent-scale estimate --help": loaded()}}))
"""


def test_the_cli_and_its_help_import_no_heavy_library() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    assert loaded == {step: [] for step in loaded}, f"heavy modules loaded: {loaded}"


def test_no_block_of_six_lines_is_repeated_in_src_or_tests() -> None:
    """Pairs with both sides in src/ or tests/ (scripts/ are not held to it); a run that could not be
    read or paired fails too, since nothing can be said about it."""
    tool = shutil.which("duplicates")
    if tool is None:
        pytest.skip("the `duplicates` command is not installed here")
    out = subprocess.run([tool, "--repo", str(ROOT), "--most", "200", "--seconds", "120"], capture_output=True,
                         text=True, timeout=300).stdout
    ours = re.compile(r"^(src|tests)/")
    wrong = []
    for line in out.splitlines():
        if re.match(r"D\d+ ", line):
            sides = re.findall(r"(\S+?):\d+-\d+", line)
            wrong += [line] if sides and all(ours.match(s) for s in sides) else []
        elif line.startswith("incomplete:") or (line.startswith("left out:") and re.search(r"\b(src|tests)/", line)):
            wrong.append(line)
    assert not wrong, "repeated blocks (run `duplicates` in the repository):\n" + "\n".join(wrong)
