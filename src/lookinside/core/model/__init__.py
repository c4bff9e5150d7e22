"""The model and its loading: what to load (LoadSpec), from where (Hub, directory, GGUF, Ollama), how (device, dtype, threads, quantization), and the machine it runs on."""
