"""Progress of long passes: a bar on a terminal, as Keras shows while training; nothing in logs."""
from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int, description: str, unit: str) -> tqdm:
    """A tqdm bar on stdout when it is a terminal; disabled (silent, no cost) when it is a file or pipe."""
    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, file=sys.stdout, leave=False,
                disable=not sys.stdout.isatty(), dynamic_ncols=True, mininterval=0.5)
