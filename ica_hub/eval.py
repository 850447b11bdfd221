"""``python -m ica_hub.eval <recipe>.yaml [key=value ...]``: the same as ``ica-hub eval``.

Evaluation runs on one process, so this is the command line itself, errors reported the same
way (one message, exit status 2).
"""

from __future__ import annotations

import sys

from ica_hub.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
