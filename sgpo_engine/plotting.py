"""matplotlib, when it is installed (the `demo` extra), off-screen; and a
figure saved whole (a temporary file renamed into place)."""
from __future__ import annotations

import os
import sys


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (with a note on stderr) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None


def save(plt, fig, path: str) -> str:
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
