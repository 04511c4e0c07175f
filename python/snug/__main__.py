"""`snug ...` (the console script) and `python -m snug ...`: the program itself."""
from __future__ import annotations

import os
import sys

from . import SnugError, binary


def main() -> None:
    try:
        exe = str(binary())
    except SnugError as e:
        sys.stderr.write(f"snug: error: {e}\n")
        raise SystemExit(1) from None
    os.execv(exe, [exe, *sys.argv[1:]])


if __name__ == "__main__":
    main()
