"""The `kinema serve` command: check the bind and the key, load the bundles, serve until stopped."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from ..errors import InputError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def data_folder(given: Path | None) -> Path:
    if given is not None:
        return given
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "kinema" / "serve"


def cmd_serve(args) -> int:
    """Serve until interrupted; bad flags are one line and exit code 2 before a bundle is read."""
    key = args.api_key or os.environ.get("KINEMA_API_KEY") or None
    if not is_loopback(args.host) and key is None:
        raise InputError(f"--host {args.host} is reachable from other machines: give --api-key (or KINEMA_API_KEY), or bind 127.0.0.1")
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port {args.port} must be in [1, 65535]")
    if not 1 <= args.queue <= 10000:
        raise InputError(f"--queue {args.queue} must be in [1, 10000]")
    if args.expire_hours is not None and not args.expire_hours > 0:
        raise InputError(f"--expire-hours {args.expire_hours} must be > 0")
    if args.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb {args.max_upload_mb} must be > 0")
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        raise InputError(f"kinema serve needs the serve extra: pip install 'kinema[serve]' ({e.name} is missing)") from None
    from ..pipeline import Pipeline

    pipes = {}
    for name in args.bundle or [None]:
        pipe = Pipeline.from_bundle(name, threads=args.threads)
        if pipe.bundle.name in pipes:
            raise InputError(f"--bundle {name}: a bundle named {pipe.bundle.name!r} is served already")
        pipes[pipe.bundle.name] = pipe
    data = data_folder(args.data)
    ttl = None if args.expire_hours is None else args.expire_hours * 3600
    app = create_app(data, pipes, api_key=key, max_queue=args.queue, max_body=int(args.max_upload_mb * (1 << 20)), ttl=ttl,
                     cors=tuple(args.cors_origin or ()))
    print(f"kinema serve: http://{args.host}:{args.port}/ (models: {', '.join(pipes)}; jobs in {data})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
