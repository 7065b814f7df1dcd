"""Starting and stopping the server: the model and its engine loop, uvicorn on a bound socket.

`serve` runs in the foreground (`lookahead serve`): SIGTERM or Ctrl-C stops accepting
connections, turns new requests on open ones away (503), lets the requests in flight finish,
then returns. `serve_in_background` runs the same server on a thread, for a script or a test:

>>> with serve_in_background(port=0) as server:         # doctest: +SKIP
...     server.url
'http://127.0.0.1:40123/v1'
"""
from __future__ import annotations

import signal
import socket
import sys
import threading
from dataclasses import dataclass, field

import uvicorn

from lookahead.engine.config import EngineConfig

DEFAULT_MAX_QUEUE = 64


class ServeError(ValueError):
    """The server cannot start (one line for the user): e.g. its port is taken."""


@dataclass
class ServeOptions:
    model: str | None = None  # None: the bundled SmolLM2
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    drafter: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    config: EngineConfig = field(default_factory=EngineConfig)
    threads: int | None = None  # torch's CPU threads (None: torch's default)
    max_queue: int = DEFAULT_MAX_QUEUE  # requests waiting at most; one more is answered 503
    log_level: str = "info"  # uvicorn's


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), before the model loads: a taken port is said at once.

    >>> first = bind("127.0.0.1", 0)
    >>> first.listen()
    >>> bind("127.0.0.1", first.getsockname()[1])
    Traceback (most recent call last):
    lookahead.serve.server.ServeError: cannot listen on 127.0.0.1:...: Address already in use
    >>> first.close()
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def open_lookahead(opts: ServeOptions):
    """The model, its drafter and engine. The source-aligned drafter is a member of `auto`, so a
    request's "source" (task gec) feeds it; a request without one aligns to its prompt."""
    import torch

    from lookahead.api import Lookahead

    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    return Lookahead(opts.model, drafter=opts.drafter, dtype=opts.dtype, device=opts.device, config=opts.config,
                     task="gec")


class Server:
    """One running server: its engine loop, app and uvicorn server, on a bound socket."""

    def __init__(self, opts: ServeOptions, lm=None):
        from lookahead.serve.app import make_app
        from lookahead.serve.engine_loop import EngineLoop

        self.sock = bind(opts.host, opts.port)
        self.host, self.port = self.sock.getsockname()[:2]
        try:
            self.lm = lm if lm is not None else open_lookahead(opts)
        except BaseException:
            self.sock.close()
            raise
        self.engine = EngineLoop(self.lm, opts.max_queue).start()
        self.app = make_app(self.engine, self.lm.model_name)
        config = uvicorn.Config(self.app, log_level=opts.log_level, lifespan="off", timeout_graceful_shutdown=None)
        self.uvicorn = DrainingUvicorn(config, self.app)

    @property
    def url(self) -> str:
        """The OpenAI base URL, e.g. http://127.0.0.1:8000/v1."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def run(self) -> None:
        """Serve until told to stop (SIGTERM, Ctrl-C or `stop`); then finish the requests in flight."""
        try:
            self.uvicorn.run(sockets=[self.sock])
        finally:
            self.engine.stop()

    def stop(self) -> None:
        """Ask a running server to drain and stop (any thread)."""
        self.app.state.draining = True
        self.uvicorn.should_exit = True


class DrainingUvicorn(uvicorn.Server):
    """uvicorn's server whose SIGTERM and Ctrl-C turn new requests away first (503), and are not raised
    again after the drain (uvicorn re-raises them, which would end the process with the signal's status)."""

    def __init__(self, config: uvicorn.Config, app):
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig, frame) -> None:
        self.app.state.draining = True
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for the requests in flight
        else:
            self.should_exit = True


def serve(opts: ServeOptions) -> None:
    """Load the model and serve in the foreground until SIGTERM or Ctrl-C (then drain)."""
    server = Server(opts)
    print(f"lookahead serve: {server.lm.model_name} at {server.url} (SIGTERM or Ctrl-C: finish the requests "
          "in flight, then stop)", file=sys.stderr, flush=True)
    server.run()


class BackgroundServer:
    """A server on a thread: `url` while it runs; leaving the `with` block (or `close`) drains and stops it."""

    def __init__(self, server: Server):
        self.server = server
        self.url = server.url
        self.thread = threading.Thread(target=server.run, name="lookahead-serve", daemon=True)
        self.thread.start()
        self._wait_started()

    def _wait_started(self, timeout: float = 60.0) -> None:
        import time

        end = time.monotonic() + timeout
        while not self.server.uvicorn.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise ServeError(f"the server on {self.url} did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.stop()
        self.thread.join()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_in_background(model=None, *, lm=None, port: int = 0, log_level: str = "warning", **options) -> BackgroundServer:
    """Start a server on a thread and return once it listens. model: as `Lookahead`'s (a folder, a
    .gguf file, None for the bundled SmolLM2); lm: a `Lookahead` already made, instead; options:
    ServeOptions' fields (port: 0, any free one)."""
    return BackgroundServer(Server(ServeOptions(model=model, port=port, log_level=log_level, **options), lm))
