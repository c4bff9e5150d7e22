"""`llm serve`: one loaded model behind an OpenAI-compatible HTTP API, for many clients.

- `registry.py` (no torch, no HTTP stack): a running server's record in the data directory,
  and `find_server`, which the CLI asks before loading a model itself.
- `settings.py`: the server's settings and limits, as plain data.
- `worker.py`: the one thread that runs the model, fed by a bounded queue (`run_on_model`).
- `openai_api.py`: the OpenAI-compatible requests, checked, and their answers, as vLLM gives them.
- `routing.py`: what every route shares: the app's state, a job on the model's thread (`run_on_model`), a JSON body
  read and checked, an error as one line.
- `app.py`: the Starlette app (`create_app`) and its OpenAI routes; `chat.py`, `views.py` and `web.py` add the
  chat's, the views' and the web inspector's routes.
- `server.py`: uvicorn around the app, the record, and a clean exit on SIGTERM and Ctrl-C.

`registry.py`, `settings.py`, `worker.py` and `openai_api.py` import neither starlette nor uvicorn (the
`lookinside[serve]` extra); the app's modules and `server.py` do.
"""
