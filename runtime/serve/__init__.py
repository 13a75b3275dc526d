"""`kinema serve`: a local HTTP front end speaking OpenAI's /v1/videos (kinema[serve]).

    fields.py   the client's fields and how each becomes a Request field
    store.py    one folder per job on disk (records replaced atomically)
    jobs.py     the queue and its worker, which runs each job through the run path
    app.py      the routes (ASGI, Starlette), the key and body-size guard
    main.py     the command: load the bundles, check the bind, run uvicorn
    page.html   the browser page served at /
"""
