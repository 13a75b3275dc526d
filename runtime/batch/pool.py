"""The built-in runner: spawned worker processes, each holding one loaded bundle, fed one task at a time.

Each worker has its own task queue, so the runner always knows which task a worker holds.
A worker that dies (killed, out of memory) is replaced and its task given again, at most
`retries` times, then recorded as failed: a task is never lost and never run twice to
completion. Workers ignore SIGINT: an interrupt reaches the runner, which stops them.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
from collections import deque
from collections.abc import Callable, Iterable


def _serve(wid: int, bundle, threads, provider, tasks, results) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .worker import Worker

    try:
        worker = Worker(bundle, threads, provider)
    except Exception as e:  # the runner reports it once and stops
        results.put(("broken", wid, f"{type(e).__name__}: {e}"))
        return
    results.put(("ready", wid, worker.name))
    while (task := tasks.get()) is not None:
        results.put(("start", wid, task["key"]))
        results.put(("done", wid, worker.run(task)))


class Pool:
    """`workers` processes with `threads` ONNX Runtime threads each, on one bundle."""

    def __init__(self, bundle, workers: int, threads: int, provider: str = "cpu", retries: int = 2):
        self.args = (bundle, threads, provider)
        self.retries = retries
        self.ctx = mp.get_context("spawn")
        self.results = self.ctx.Queue()
        self.procs: dict[int, mp.Process] = {}
        self.tasks: dict[int, mp.Queue] = {}
        self._next = 0
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        wid, self._next = self._next, self._next + 1
        self.tasks[wid] = self.ctx.Queue()
        self.procs[wid] = self.ctx.Process(target=_serve, args=(wid, *self.args, self.tasks[wid], self.results), daemon=True)
        self.procs[wid].start()

    def map(self, tasks: Iterable[dict], on_result: Callable[[dict], None]) -> None:
        """Run every task; `on_result(result)` for each, in completion order (a failure is a result with `error`)."""
        pending = deque(tasks)
        held: dict[int, dict] = {}  # worker -> the task it was given
        tries: dict[str, int] = {}
        idle = set(self.procs)
        while pending or held:
            while pending and idle:
                wid = idle.pop()
                held[wid] = pending.popleft()
                self.tasks[wid].put(held[wid])
            try:
                msg = self.results.get(timeout=0.5)
            except queue.Empty:
                msg = None
            if msg is not None:
                kind, wid, value = msg
                if kind == "broken":
                    raise RuntimeError(f"a batch worker could not open the bundle: {value}")
                if kind == "done":
                    held.pop(wid, None)
                    idle.add(wid)
                    on_result(value)
            for wid, proc in list(self.procs.items()):
                if proc.is_alive():
                    continue
                task = held.pop(wid, None)
                del self.procs[wid], self.tasks[wid]
                idle.discard(wid)
                self._spawn()
                idle.add(self._next - 1)
                if task is not None:
                    tries[task["key"]] = tries.get(task["key"], 0) + 1
                    if tries[task["key"]] <= self.retries:
                        pending.appendleft(task)
                    else:
                        on_result({"key": task["key"], "worker": f"pid {proc.pid}", "seconds": None,
                                   "error": f"the worker died {tries[task['key']]} times on this request (exit code {proc.exitcode})"})

    def close(self) -> None:
        for wid, proc in self.procs.items():
            if proc.is_alive():
                self.tasks[wid].put(None)
        for proc in self.procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.kill()
        for proc in self.procs.values():
            proc.join(timeout=10)
