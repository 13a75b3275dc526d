"""One entry for every front end that fans requests out: the built-in pool, or Ray when an address is given."""

from __future__ import annotations

from collections.abc import Callable


def map_tasks(bundle, tasks: list[dict], on_result: Callable[[dict], None], *, workers: int, threads: int,
              provider: str = "cpu", ray: str | None = None, retries: int = 2, ship: bool = False) -> None:
    """Run tasks (`{"key", "request": Request.to_dict(), "mode"}`) on `workers` workers; `on_result` per result."""
    if ray:
        from .ray_runner import connect, map_on_ray

        connect(ray)
        map_on_ray(bundle, tasks, workers, threads, on_result, provider=provider, retries=retries, ship=ship)
        return
    from .pool import Pool

    pool = Pool(bundle, workers, threads, provider, retries=retries)
    try:
        pool.map(tasks, on_result)
        pool.close()
    except BaseException:
        pool.kill()
        raise
