"""``poseseg serve``: an HTTP API (FastAPI) and a web page for the model.

    from poseseg import Predictor
    from poseseg.serve import create_app
    app = create_app(Predictor("model_final.pt", score_thresh=0.0))   # any ASGI server runs it

Needs the ``serve`` extra: ``pip install 'poseseg[serve]'``.
"""
from poseseg.serve.app import create_app
from poseseg.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
