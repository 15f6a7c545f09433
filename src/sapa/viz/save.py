"""Writing figures to disk."""
from __future__ import annotations

import os

from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str, dpi: int = 120) -> str:
    """Save ``fig`` as ``path`` (PNG unless the extension says otherwise) and return the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
