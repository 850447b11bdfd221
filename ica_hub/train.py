"""``python -m ica_hub.train <recipe>.yaml [key=value ...]``: the entry point for
``accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m ica_hub.train ...``."""

from __future__ import annotations

import sys

from ica_hub.cli import module_main
from ica_hub.training.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    return module_main("python -m ica_hub.train", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
