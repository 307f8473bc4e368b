"""`python -m app.tools.loadtest`: the same tool as `dps loadtest`, with the same options."""

from __future__ import annotations

import argparse
import sys

from app.tools.loadtest import DESCRIPTION, run
from app.tools.loadtest.options import add_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.tools.loadtest", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
