"""`llm serve`: one loaded model behind an OpenAI-compatible HTTP API, for many clients.

- `registry.py` (no torch, no HTTP stack): a running server's record in the data directory,
  and `find_server`, which the CLI asks before loading a model itself.
- `settings.py`: the server's settings and limits, as plain data.
- `worker.py`: the one thread that runs the model, fed by a bounded queue (`run_on_model`).
- `openai_api.py`: the OpenAI-compatible requests, checked, and their answers, as vLLM gives them.
- `app.py`: the Starlette app (`create_app`), its routes, key check and errors.
- `server.py`: uvicorn around the app, the record, and a clean exit on SIGTERM and Ctrl-C.

Only `app.py` and `server.py` import starlette and uvicorn (the `lookinside[serve]` extra).
"""
