"""`lookahead serve`: an OpenAI-compatible HTTP server over one continuously batched engine.

Modules: openai_schema (request and response shapes), engine_loop (the engine's own thread),
metrics (Prometheus text), app (the routes), server (uvicorn, start, drain, stop).
Needs the `serve` extra (fastapi, uvicorn).
"""
from lookahead.serve.server import ServeOptions, serve, serve_in_background

__all__ = ["ServeOptions", "serve", "serve_in_background"]
