"""The package's shape, read from its source: layers whose imports point one way, no cycles,
short functions, and a command line that starts without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "acn"

# Each component (a subpackage, or a module of its own) and its layer. An import may point to a
# lower layer or stay inside its own component; components of one layer never import each other.
LAYERS = {
    "acn.errors": 1,
    "acn.launch": 1,
    "acn.files": 1,
    "acn.version": 1,
    "acn.config": 2,
    "acn.store": 2,
    "acn.runtime": 2,
    "acn.distributed": 2,
    "acn.threads": 2,
    "acn.nn": 3,
    "acn.bank": 3,
    "acn.data": 3,
    "acn.model": 4,
    "acn.train": 5,
    "acn.eval": 5,
    "acn.sampling": 5,
    "acn.codec": 5,
    "acn.viz": 6,
    "acn.experiments": 7,
    "acn.cli": 8,
    "acn.__main__": 9,  # python -m acn: the command line, run
    "acn": 9,  # the package face: serves the public names, imported by no one
}
# Modules the command line reads before it knows what to run: no torch, no numpy.
LIGHT = ("acn", "acn.cli", "acn.cli.parser", "acn.cli.commands", "acn.config", "acn.version")
# Past this many lines (docstring excluded) a function is doing more than one job.
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Our modules that ``name`` imports anywhere in its source (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from acn.eval import measure" imports the module acn.eval.measure.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        out |= {t for t in targets if t in MODULES and t != name}
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _component(name: str) -> str:
    for size in range(name.count(".") + 1, 0, -1):
        prefix = ".".join(name.split(".")[:size])
        if prefix in LAYERS:
            return prefix
    raise AssertionError(f"{name} belongs to no layer: add its component to LAYERS")


def test_every_module_has_a_layer():
    for name in MODULES:
        _component(name)


def _wrong_edges(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up a layer or sideways to a sibling component."""
    wrong = []
    for name, targets in graph.items():
        for target in sorted(targets):
            a, b = _component(name), _component(target)
            if a != b and LAYERS[a] <= LAYERS[b]:
                wrong.append(f"{name} (L{LAYERS[a]}) imports {target} (L{LAYERS[b]})")
    return wrong


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_imports_point_down_or_stay_inside_their_component():
    wrong = _wrong_edges(GRAPH)
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_cycle():
    cycle = _cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def test_the_checks_can_fail():
    """The parser sees real edges, and the two checks flag an upward, a sideways and a
    circular import (so a passing check is not vacuous)."""
    assert "acn.model" in GRAPH["acn.train.loop"]
    assert "acn.experiments.reproduce" in GRAPH["acn.experiments.demo"]
    assert _wrong_edges({"acn.nn.prior": {"acn.model"}}) == [
        "acn.nn.prior (L3) imports acn.model (L4)"
    ]
    assert _wrong_edges({"acn.bank.tour": {"acn.data.info"}})  # siblings
    assert not _wrong_edges({"acn.nn.build": {"acn.nn.prior", "acn.config"}})
    cycle = {"acn.a": {"acn.b"}, "acn.b": {"acn.c"}, "acn.c": {"acn.a"}}
    assert _cycle(cycle) == ["acn.a", "acn.b", "acn.c", "acn.a"]


def test_no_function_is_long():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = node.body[0]
                docstring = (
                    first.end_lineno - first.lineno + 1
                    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    else 0
                )
                lines = node.end_lineno - node.lineno + 1 - docstring
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_the_command_line_and_the_package_face_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        f"for m in {LIGHT!r}: __import__(m)\n"
        "import acn; acn.__version__\n"
        "from acn.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    for argv in (['config'], ['config', 'digits-acn', 'train.steps=3']):\n"
        "        assert main(argv) == 0\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0\n"
        "err = io.StringIO()\n"  # a mistyped value is answered before the library loads
        "with contextlib.redirect_stderr(err):\n"
        "    assert main(['train', 'digits-acn', 'train.lr=abc', '--out', 'unused']) == 2\n"
        "assert 'train.lr: expected a number' in err.getvalue(), err.getvalue()\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'sklearn') if m in sys.modules)\n"
        "assert 'digits-acn' in out.getvalue() and 'usage: acn' in out.getvalue()\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_public_names_load_on_first_use():
    code = (
        "import sys, acn\n"
        "assert 'torch' not in sys.modules\n"
        "assert acn.ACN.__name__ == 'ACN' and acn.CodeBank.__name__ == 'CodeBank'\n"
        "assert callable(acn.load_config) and callable(acn.measure) and acn.Config\n"
        "assert 'torch' in sys.modules and set(acn.__all__) <= set(dir(acn))\n"
        "try:\n"
        "    acn.nope\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "has no attribute 'nope'" in done.stdout
