"""The bench and helper scripts are not imported by any other test: a syntax
error there would only show on the GPU machine or in a bench run. Compile
each one, and run the training bench's --help (its imports and argparse)."""
import glob
import os
import subprocess
import sys

import pytest

from train_helpers import ROOT, subprocess_env

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "bench", "*.py")) + glob.glob(os.path.join(ROOT, "scripts", "*.py")))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_script_compiles(path):
    with open(path) as f:
        compile(f.read(), path, "exec")  # raises SyntaxError naming the line


@pytest.mark.parametrize("script", ["bench_train.py", "bench_real.py", "bench_sync.py"])
def test_bench_script_parses_its_arguments(script):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--help"], env=subprocess_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_get_smollm2_names_the_missing_converter():
    """Without transformers or gguf, scripts/get_smollm2.py says which to install (no traceback)."""
    code = ("import sys; sys.modules['gguf'] = None; sys.path.insert(0, 'scripts'); "
            "sys.argv = ['get_smollm2.py', 'unused-dir']; import get_smollm2; get_smollm2.main()")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "needs gguf" in r.stderr and 'pip install -e ".[real]"' in r.stderr
