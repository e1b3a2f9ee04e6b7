"""Shared by the serve tests: one tiny trained model, an app over it, the COCO photo as bytes."""
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve tests need the serve extra: pip install -e '.[serve]'")


@pytest.fixture(scope="session")
def serve_predictor(trained_checkpoint):
    """Keeps every detection (score_thresh=0): requests choose their own threshold."""
    from poseseg import Predictor

    return Predictor(trained_checkpoint, device="cpu", score_thresh=0.0)


@pytest.fixture(scope="session")
def photo_path(coco_sample) -> Path:
    return coco_sample / "000000000785.jpg"


@pytest.fixture(scope="session")
def photo_bytes(photo_path) -> bytes:
    return photo_path.read_bytes()


@pytest.fixture
def make_client(serve_predictor):
    """``make_client(**settings)`` -> a TestClient over a fresh app (lifespan run, closed at the end)."""
    from fastapi.testclient import TestClient

    from poseseg.serve import ServeSettings, create_app

    clients = []

    def make(**settings):
        client = TestClient(create_app(serve_predictor, ServeSettings(**settings)))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
