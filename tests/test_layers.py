"""The layers of ARCHITECTURE.md hold: core <- serving <- training, imports running one way, none hidden inside a
function to dodge a cycle."""

import ast
import json
import subprocess
import sys

import pytest

from conftest import ROOT

CORE = ["encoder/model.py", "encoder/model_config.py", "encoder/tokenizer.py", "encoder/collate.py",
        "encoder/checkpoint.py", "encoder/errors.py", "encoder/predictor.py", "encoder/metrics.py",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "encoder" / "tasks").glob("*.py"))]
SERVING = ["encoder/serving.py", "encoder/predict.py", "encoder/export.py", "encoder/hf.py"]
ABOVE = {"core": ("encoder.serving", "encoder.predict", "encoder.export", "encoder.hf", "encoder.training", "train"),
         "serving": ("encoder.training", "train")}

PROBE = """
import importlib, json, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
above = json.loads(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if any(m == a or m.startswith(a + ".") for a in above))))
"""


def _module(path: str) -> str:
    return path[: -len(".py")].replace("/", ".").removesuffix(".__init__")


@pytest.mark.parametrize("layer, files", [("core", CORE), ("serving", SERVING)])
def test_a_layer_imports_nothing_above_it(layer, files):
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(ABOVE[layer]), *map(_module, files)],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(done.stdout) == [], f"importing the {layer} layer loaded these"


@pytest.mark.parametrize("layer, path", [*(("core", p) for p in CORE), *(("serving", p) for p in SERVING)])
def test_no_function_imports_from_a_layer_above(layer, path):
    """What the probe above cannot see: an import inside a function, run only on some path (how a cycle hides).
    Imports inside functions that stay in the layer or below are fine (a task's metrics() imports torchmetrics
    and encoder.metrics there so that serving never loads torchmetrics)."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    upward = []
    for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in ast.walk(function):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            upward += [f"{function.name}: {n}" for n in names if any(n == a or n.startswith(a + ".")
                                                                     for a in ABOVE[layer])]
    assert upward == [], f"{path} imports from a layer above {layer} inside functions"
