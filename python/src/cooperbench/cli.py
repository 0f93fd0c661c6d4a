"""The `cooperbench` command: CooperBench's command line (`run`, `eval`, `prepare`) on cbench,
which accepts its flags as they are; every other cbench command works too."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import cbench


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs `cooperbench ARGS` as `cbench ARGS`."""
    return cbench.main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
