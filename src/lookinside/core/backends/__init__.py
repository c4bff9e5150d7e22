"""The seam between the views and a model: the Backend protocol and its capabilities, the model here, an OpenAI-compatible server, and `llm serve`."""
