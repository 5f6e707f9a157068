"""The connector's modules read top-down: each imports only what comes before it, so no import cycle
can form and a newcomer can read `connector/beam` in the order a record travels."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAM = os.path.join(ROOT, "connector", "beam")

# connector/beam in dependency order: the helpers, the record's types and encodings, the Publisher,
# then the path a record takes (routing; batch with its chunks and ordering; streaming; the publishing
# both share), the transform, and what is built on it.
BEAM_ORDER = ["hints", "memory", "json_values", "results", "encoders", "schemas", "credentials", "publisher",
              "metrics", "packing", "routing", "chunks", "ordering", "publishing", "batch", "streaming", "write",
              "rows", "yaml_provider"]
# The layers: each package imports only the packages before it (the emulator shares the protocol only).
LAYERS = {"protocol": {"protocol"}, "client": {"protocol", "client"}, "beam": {"protocol", "client", "beam"},
          "emulator": {"protocol", "emulator"}}


def _imported_modules(path, package):
    """The connector modules a file imports, as dotted names (relative imports resolved)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("connector."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("connector"):
                found.update(f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                             for alias in node.names)
    return found


def _is_module(dotted):
    path = os.path.join(ROOT, *dotted.split("."))
    return os.path.exists(path + ".py") or os.path.isdir(path)


def test_connector_beam_lists_every_module_once():
    modules = sorted(name[:-3] for name in os.listdir(BEAM) if name.endswith(".py") and name != "__init__.py")
    assert sorted(BEAM_ORDER) == modules


@pytest.mark.parametrize("module", BEAM_ORDER)
def test_each_beam_module_imports_only_modules_before_it(module):
    before = {f"connector.beam.{name}" for name in BEAM_ORDER[:BEAM_ORDER.index(module)]}
    imported = {name for name in _imported_modules(os.path.join(BEAM, f"{module}.py"), "connector.beam")
                if name.startswith("connector.beam")}
    assert imported <= before, f"{module} imports {sorted(imported - before)}, which come after it"


def test_each_package_imports_only_the_layers_below_it():
    for package, allowed in LAYERS.items():
        directory = os.path.join(ROOT, "connector", package)
        for name in os.listdir(directory):
            if name.endswith(".py"):
                layers = {dotted.split(".")[1] for dotted in
                          _imported_modules(os.path.join(directory, name), f"connector.{package}")
                          if dotted.count(".") >= 1}
                assert layers <= allowed, f"connector/{package}/{name} imports {sorted(layers - allowed)}"


def test_the_beam_modules_import_one_by_one_in_that_order():
    """Imported in that order in a fresh interpreter, each loads with only those before it loaded."""
    script = "; ".join(f"import connector.beam.{name}" for name in BEAM_ORDER)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
