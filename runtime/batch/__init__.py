"""`kinema batch`: many requests from a JSONL file, on a built-in process pool or a Ray cluster.

    lines.py       the batch file: one request per line, checked whole before any work
    worker.py      what a worker does: open the bundle once, run requests through the run path
    pool.py        the built-in runner: spawned processes, a dead worker's task given again
    ray_runner.py  the same workers as Ray actors (kinema[ray])
    results.py     DIR/results.jsonl, appended as videos finish; what a rerun skips
    main.py        the command
"""
