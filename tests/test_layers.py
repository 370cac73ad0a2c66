"""The layers of ARCHITECTURE.md hold: every module of encoder/ belongs to exactly one layer (its folder says which),
imports run one way (core <- serving <- training), none hidden inside a function, and core and serving import the
third-party libraries the map names, no others."""

import ast
import json
import subprocess
import sys

import pytest

from conftest import ROOT

# a layer's modules, by dotted prefix: a folder each, and serving's two commands (python -m encoder.predict/export)
LAYERS = {"core": ("encoder.core", "encoder.tasks"),
          "serving": ("encoder.serving", "encoder.predict", "encoder.export"),
          "training": ("encoder.training",)}
ORDER = list(LAYERS)  # lower first
# what core and serving import at import time, and what they import only inside the function that needs it
AT_IMPORT = {"torch", "numpy", "tokenizers", "safetensors", "tqdm"}
WHEN_USED = {"onnxruntime", "onnx", "onnxscript", "transformers", "pyarrow", "torchmetrics"}


def _module(path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module(p): p for p in sorted((ROOT / "encoder").rglob("*.py"))}


def layer_of(module: str) -> list[str]:
    return [name for name, prefixes in LAYERS.items() if any(module == p or module.startswith(p + ".")
                                                             for p in prefixes)]


def imports(path) -> list[tuple[str, bool]]:
    """(module, inside a function) for every import statement of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            # `from encoder import tasks` imports encoder.tasks; `from torch import nn` imports torch
            found += [(f"{node.module}.{a.name}" if node.module == "encoder" else node.module, id(node) in inside)
                      for a in node.names]
    return found


def test_every_module_belongs_to_exactly_one_layer():
    """A new module in no layer's folder (encoder/foo.py) fails here: it goes where its layer is."""
    placed = {module: layer_of(module) for module in MODULES if module != "encoder"}
    assert {m: layers for m, layers in placed.items() if len(layers) != 1} == {}
    assert set(ORDER) == {layer for layers in placed.values() for layer in layers}


@pytest.mark.parametrize("module", [m for m in MODULES if m != "encoder"])
def test_no_import_runs_upward_at_import_time_or_inside_a_function(module):
    (mine,) = layer_of(module)
    above = ORDER[ORDER.index(mine) + 1:]
    upward = [(name, inside) for name, inside in imports(MODULES[module])
              if any(layer in above for layer in layer_of(name))]
    assert upward == [], f"{module} ({mine}) imports from a layer above"


def test_the_package_itself_imports_core_only():
    """`import encoder` runs encoder/__init__.py before any module of the package: it names serving's load_model
    lazily (on first use), so importing core never loads serving."""
    assert all(layer_of(name) == ["core"] for name, _ in imports(MODULES["encoder"]) if name.startswith("encoder"))


def imported_only_inside_functions() -> set[str]:
    """Our modules that every importer imports inside a function (entity_f1.py: a task's metrics() imports it, so
    torchmetrics, which it subclasses, loads only in training): their own imports count as made when used."""
    named = [(name, inside) for path in MODULES.values() for name, inside in imports(path)]
    return {m for m in MODULES if any(n == m for n, _ in named) and all(inside for n, inside in named if n == m)}


@pytest.mark.parametrize("layer", ["core", "serving"])
def test_core_and_serving_import_the_libraries_the_map_names(layer):
    third_party, lazy = {}, imported_only_inside_functions()
    for module in (m for m in MODULES if layer_of(m) == [layer]):
        for name, inside in imports(MODULES[module]):
            inside = inside or module in lazy
            top = name.split(".")[0]
            if top != "encoder" and top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, set()).add("when used" if inside else "at import")
    assert {t for t, when in third_party.items() if "at import" in when} <= AT_IMPORT, third_party
    assert set(third_party) <= AT_IMPORT | WHEN_USED, third_party


PROBE = """
import importlib, json, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
above = json.loads(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if any(m == a or m.startswith(a + ".") for a in above))))
"""


@pytest.mark.parametrize("layer", ["core", "serving"])
def test_importing_a_layer_loads_nothing_above_it(layer):
    """What the AST cannot see: an import made by a library on our behalf, or a name resolved at run time."""
    above = [p for name in ORDER[ORDER.index(layer) + 1:] for p in LAYERS[name]] + ["train", "lightning", "datasets",
                                                                                   "torchmetrics", "matplotlib"]
    mine = [m for m in MODULES if layer_of(m) == [layer] and m not in imported_only_inside_functions()]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(above), *mine], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert json.loads(done.stdout) == [], f"importing the {layer} layer loaded these"
