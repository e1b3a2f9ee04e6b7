"""``poseseg serve``: load the weights, build the app, run it under uvicorn (one or more processes)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field

from poseseg.serve.settings import API_KEY_ENV, ServeSettings

SPEC_ENV = "POSESEG_SERVE_SPEC"  # how the settings reach the worker processes of --workers N
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
log = logging.getLogger("poseseg.serve")
DRAIN_TIMEOUT_S = 60.0  # after SIGTERM, how long requests in flight may take before they are cut


@dataclass
class ServerSpec:
    """Everything a serving process needs to build its app."""

    weights: str
    config: str | None = None
    device: str = "auto"
    runtime: str = "auto"  # auto, torch, onnxruntime, openvino (poseseg.predictor.resolve_runtime)
    overrides: list[str] = field(default_factory=list)
    settings: ServeSettings = field(default_factory=ServeSettings)


def build_app(spec: ServerSpec):
    """Load the model (every detection kept: requests choose their threshold) and build the app."""
    from poseseg.predictor import Predictor
    from poseseg.serve.app import create_app

    predictor = Predictor(spec.weights, config=spec.config, device=spec.device, score_thresh=0.0,
                          overrides=spec.overrides or None, runtime=spec.runtime)
    return create_app(predictor, spec.settings)


def app_from_env():
    """The app factory each uvicorn worker process calls (``--workers N``).

    Unless OMP_NUM_THREADS says otherwise, the N processes share the cores (cores // N threads each)
    instead of each starting one thread per core.
    """
    raw = json.loads(os.environ[SPEC_ENV])
    workers = raw.pop("workers", 1)
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    _configure_logging()
    return build_app(ServerSpec(**{**raw, "settings": ServeSettings(**raw["settings"])}))


def run_server(spec: ServerSpec, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               log_level: str = "info", drain_timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Serve until SIGTERM or Ctrl-C. A host other than loopback prints a warning (and another without an API key).

    The weights are loaded before the URL is printed, so a file or option that cannot be served (a
    missing file, ``--config`` with an ``.onnx`` file, a device the runtime lacks) is refused before it.
    On SIGTERM the server stops listening, answers every request it has accepted (waiting up to
    ``drain_timeout`` seconds for them), and returns normally (exit code 0).
    """
    import uvicorn

    if spec.settings.api_key is None and os.environ.get(API_KEY_ENV):
        spec.settings.api_key = os.environ[API_KEY_ENV]
    for warning in exposure_warnings(host, spec.settings.api_key):
        print(f"warning: {warning}", file=sys.stderr)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if drain_timeout <= 0:
        raise ValueError(f"--drain-timeout must be positive, got {drain_timeout}")
    if not os.path.isfile(spec.weights):
        raise FileNotFoundError(f"--weights {spec.weights}: no such file; give a poseseg checkpoint "
                                "(runs/train/NAME/model_final.pt) or an exported .onnx file")
    _configure_logging()
    with _sigterm_ends_the_run():
        app = build_app(spec)  # with --workers N only a check: each worker process builds its own
        shown = f"[{host}]" if ":" in host else host
        print(f"poseseg serve: http://{shown}:{port}/  (API docs at /docs; {workers} process(es), "
              f"--max-batch {spec.settings.max_batch or 'auto: 8 on a GPU, 1 on CPU'})", file=sys.stderr)
        options = dict(host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain_timeout)
        if workers == 1:
            uvicorn.run(app, **options)
        else:
            del app
            os.environ[SPEC_ENV] = json.dumps({**asdict(spec), "settings": asdict(spec.settings), "workers": workers})
            uvicorn.run("poseseg.serve.server:app_from_env", factory=True, workers=workers, **options)


class _Terminated(Exception):
    """SIGTERM arrived outside uvicorn's own handling: while the model loaded, or re-raised after its drain."""


@contextlib.contextmanager
def _sigterm_ends_the_run():
    """SIGTERM is how process managers stop a server; it ends :func:`run_server` normally (exit code 0).

    While uvicorn runs it handles SIGTERM itself (stop listening, answer the requests in flight, shut
    the app down), then raises the signal again, which the default handler would turn into a death by
    signal (exit status 143). That second delivery, or a SIGTERM while the model loads, lands here.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def stop(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except _Terminated:
        log.info("stopped by SIGTERM")
    finally:
        signal.signal(signal.SIGTERM, previous)


def exposure_warnings(host: str, api_key: str | None) -> list[str]:
    """What to tell the user when the server is reachable from other machines."""
    if host in LOOPBACK:
        return []
    out = [f"--host {host} makes the server reachable from other machines, not only this one"]
    if not api_key:
        out.append(f"and no API key is set: anyone who can reach the port can run the model "
                   f"(--api-key KEY or {API_KEY_ENV}=KEY)")
    return out


def _configure_logging() -> None:
    logger = logging.getLogger("poseseg.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
