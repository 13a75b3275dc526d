"""The `kinema` command: parse, run the command, and turn a KinemaError into one line and exit code 2.

Bad input exits with code 2 and one line on stderr, before any graph is opened or file
written. The torch-side folders are imported inside the commands that need them.
"""

from __future__ import annotations

import sys

from ..errors import KinemaError
from .parser import EXIT_USAGE, build_parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KinemaError as e:
        print(f"kinema {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kinema: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
