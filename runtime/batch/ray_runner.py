"""The Ray runner (kinema[ray]): the batch workers as Ray actors on an existing cluster.

Each actor holds one loaded bundle and reserves as many CPUs as it gives ONNX Runtime
threads. The runner keeps one task in flight per actor and knows which task each actor
holds. An actor that dies is restarted by Ray and its task retried (`max_restarts`,
`max_task_retries`); past that, the task is recorded as failed and a fresh actor takes its
place. The bundle goes to the actors by path (a shared file system), or with `ship=True`
once through the object store, unpacked by each actor into a private folder. Outputs are
written by the actor into the output folder, or, with `--ray-bytes`, sent back as bytes
and written by the runner. Usage statistics stay off; a cluster's token authentication is
Ray's own (its environment and files).
"""

from __future__ import annotations

import atexit
import os
import socket
import tempfile
from pathlib import Path

from ..errors import InputError


def connect(address: str) -> None:
    """`ray.init` on an existing cluster; an unreachable address is one InputError line, quickly."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'kinema[ray]'") from None
    if ray.is_initialized():
        return
    host, _, port = address.rpartition(":")
    if address != "auto" and not address.startswith("ray://"):
        if not host or not port.isdigit():
            raise InputError(f"--ray {address}: give auto or HOST:PORT of a running cluster's head")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as e:
            raise InputError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e})") from None
    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError(f"--ray {address}: cannot join the cluster ({str(e).splitlines()[0]})") from None
    # Leave the cluster at exit before Ray's own exit hook would: that hook waits half a
    # second for worker logs to reach the terminal, and with log_to_driver off none come.
    atexit.register(ray.shutdown)


def pack(folder: str | os.PathLike) -> dict[str, bytes]:
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class RayWorker:
    """A batch `Worker` in an actor; the bundle is a path, or a packed folder from the object store."""

    def __init__(self, bundle, threads: int, provider: str):
        from .worker import Worker

        if isinstance(bundle, dict):  # shipped: unpack once into this actor's own folder
            self._tmp = tempfile.TemporaryDirectory(prefix="kinema-bundle-")
            for rel, data in bundle.items():
                target = Path(self._tmp.name, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            bundle = self._tmp.name
        self.worker = Worker(bundle, threads, provider, name=f"ray:{socket.gethostname()}:{os.getpid()}")

    def run(self, task: dict) -> dict:
        return self.worker.run(task)

    def pid(self) -> int:
        return os.getpid()


def write_bytes(path: str, data: bytes) -> None:
    """A file sent back by a worker, written atomically."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.ray.part")
    tmp.write_bytes(data)
    os.replace(tmp, target)


DEPTH = 2


def _alive(a) -> bool:
    import ray

    try:
        ray.get(a.pid.remote(), timeout=30)
        return True
    except Exception:  # any failure to answer: the slot gets a fresh actor
        return False


def map_on_ray(bundle, tasks: list[dict], workers: int, threads: int, on_result, *, provider: str = "cpu", retries: int = 2, ship: bool = False) -> None:
    """Run tasks on the connected cluster's actors; `on_result` for each, in completion order."""
    import ray
    from ray.exceptions import RayActorError

    from ..bundle.load import default_bundle_path

    source = ray.put(pack(bundle or default_bundle_path())) if ship else (str(Path(bundle).resolve()) if bundle else None)
    actor = ray.remote(num_cpus=threads, max_restarts=retries, max_task_retries=retries)(RayWorker)
    actors = [actor.remote(source, threads, provider) for _ in range(workers)]
    pending = list(reversed(tasks))
    flying: dict = {}  # future -> (actor slot, task)
    held = [0] * workers  # tasks in flight per slot: two, so the next one is queued while one runs
    try:
        while pending or flying:
            for i in range(workers):
                while pending and held[i] < DEPTH:
                    task = pending.pop()
                    flying[actors[i].run.remote(task)] = (i, task)
                    held[i] += 1
            done, _ = ray.wait(list(flying), num_returns=1)
            i, task = flying.pop(done[0])
            held[i] -= 1
            try:
                on_result(ray.get(done[0]))
            except RayActorError as e:
                on_result({"key": task["key"], "worker": "ray", "seconds": None,
                           "error": f"the Ray worker died {retries + 1} times on this request ({type(e).__name__})"})
                if not _alive(actors[i]):
                    actors[i] = actor.remote(source, threads, provider)
    finally:
        for a in actors:
            ray.kill(a)
