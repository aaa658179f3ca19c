"""The layers of docs/architecture.md hold (no import points up a layer or runs round a loop, the config reads
without torch) and the plugin tables are explicit (every name checked when a config is parsed, one way)."""

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# forms.Law.fit calls fit_law, and fit_law fits a Law: the one loop the layers allow, inside laws/
ALLOWED_LOOP = [("scarce.laws.forms", "scarce.laws.fit")]


def layers() -> list[list[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```layers\n", 1)[1].split("```", 1)[0]
    return [line.split() for line in block.strip().splitlines()]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "scarce").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The scarce modules `name` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from scarce import runs` imports the module scarce.runs; `from scarce.x import f`, the module scarce.x
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t.split(".")[0] == "scarce" and t != name}
    return out


def layer_of(name: str, table: list[list[str]]) -> int:
    best = None
    for level, names in enumerate(table):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (level, prefix)
    assert best is not None, f"{name} is in no layer of docs/architecture.md: add it there"
    return best[0]


def test_no_import_points_up_a_layer():
    table, known = layers(), modules()
    upward = []
    for name, path in known.items():
        for target in imports(name, path, known):
            if layer_of(target, table) > layer_of(name, table):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports up a layer:\n" + "\n".join(sorted(upward))


def test_no_modules_import_each_other_round_a_loop():
    known = modules()
    graph = {name: imports(name, path, known) & known.keys() for name, path in known.items()}
    # a package's __init__ importing its own submodules is how a package shows its names, not a loop
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    for a, b in ALLOWED_LOOP:
        graph[a].discard(b)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"modules importing each other round a loop: {' -> '.join(e.args[1])}")


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from . import sibling\n\ndef f():\n    from scarce.train.trainer import train\n")
    known = {"scarce.data.sibling": source, "scarce.data.mod": source}
    assert imports("scarce.data.mod", source, known) == {"scarce.data.sibling", "scarce.train.trainer"}
    assert layer_of("scarce.train.trainer", layers()) > layer_of("scarce.data.mod", layers())


@pytest.mark.parametrize("code", [
    "import scarce.config; scarce.config.RunConfig()",
    "from scarce.config import load_config; load_config(None, ['procedural.task=dyck', 'procedural.steps=2'])",
])
def test_reading_a_config_imports_no_torch(code):
    check = f"import sys; {code}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, text=True)


def test_every_batch_source_name_the_config_accepts_is_in_the_table():
    from scarce.config import SOURCE_NAMES
    from scarce.data.sources import SOURCES

    assert set(SOURCE_NAMES) == set(SOURCES)


@pytest.mark.parametrize("override, key, what", [
    ("data.source=stream", "data.source", "batch source 'stream'"),
    ("procedural.task=dyk", "procedural.task", "procedural task 'dyk'"),
    ("model.size=huge", "model.size", "size 'huge'"),
])
def test_every_plugin_name_is_checked_when_the_config_is_parsed_the_same_way(override, key, what):
    from scarce.config import resolve_config
    from scarce.errors import ScarceError

    with pytest.raises(ScarceError, match=rf"{key}: .*unknown {what}; choose one of "):
        resolve_config({}, [override])
