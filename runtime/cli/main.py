"""The `kinema` command: parse, run the command, and turn a KinemaError into one line and exit code 2.

Bad input exits with code 2 and one line on stderr, before any graph is opened or file
written. The torch-side folders are imported inside the commands that need them. SIGTERM
and SIGHUP (a `kill`, a closed terminal) stop a command the way Ctrl-C does: the writer's
temporary output is removed, and the exit code is 128 + the signal's number. Anything
unexpected is one line and exit code 1; `KINEMA_DEBUG=1` shows its traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from ..errors import KinemaError
from .parser import EXIT_USAGE, build_parser


class Stopped(KeyboardInterrupt):
    """A SIGTERM or SIGHUP, raised where the main thread is, so every `with` block unwinds as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


def _handle_signals() -> dict:
    """Install the handlers where the default would kill the process; the previous handlers, to restore."""
    before = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            before[sig] = signal.signal(sig, _stop)
    return before


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    before = _handle_signals() if threading.current_thread() is threading.main_thread() else {}
    try:
        return args.func(args)
    except KinemaError as e:
        print(f"kinema {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"kinema {args.command}: error: out of memory; try fewer frames, a smaller size, --cfg-mode sequential or --low-memory", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a folder gone, a permission changed mid-run
        print(f"kinema {args.command}: error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 1
    except Exception as e:  # anything unexpected: one line; the traceback with KINEMA_DEBUG=1
        if os.environ.get("KINEMA_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"kinema {args.command}: internal error: {type(e).__name__}{': ' + first if first else ''} (KINEMA_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if isinstance(e, Stopped):
            print(f"\nkinema: stopped by {signal.Signals(e.signum).name}; no partial output was left", file=sys.stderr)
            return 128 + e.signum
        print("\nkinema: interrupted; no partial output was left", file=sys.stderr)  # after a progress line
        return 130
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
