"""Micro-batching and liveness, with the real model held at a barrier so the order of events is fixed."""
import asyncio
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from poseseg.serve import ServeSettings, create_app
from poseseg.serve.batcher import Batcher

httpx = pytest.importorskip("httpx2", reason="the async API tests use httpx2 (dev extra)")


class ModelBarrier:
    """A forward pre-hook that records batch sizes and holds the first batch until released."""

    def __init__(self, model, fail_width: int | None = None):
        self.sizes: list[int] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.fail_width = fail_width
        self.handle = model.transform.register_forward_pre_hook(self)  # called once per batch, with its images

    def __call__(self, module, args):
        self.sizes.append(len(args[0]))
        self.entered.set()
        self.release.wait(timeout=60)
        if self.fail_width is not None and any(img.shape[-1] == self.fail_width for img in args[0]):
            raise RuntimeError("simulated failure on one image")


async def wait_until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        await asyncio.sleep(0.005)


def run_scenario(predictor, scenario, **settings):
    app = create_app(predictor, ServeSettings(**settings))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            try:
                return await scenario(client, app.state.batcher)
            finally:
                await app.state.batcher.close()

    return asyncio.run(main())


def test_healthz_answers_while_the_model_works_and_queued_images_form_one_batch(serve_predictor, photo_bytes):
    barrier = ModelBarrier(serve_predictor.model)

    async def scenario(client, batcher):
        first = asyncio.create_task(client.post("/predict?score_thresh=0", content=photo_bytes))
        await wait_until(barrier.entered.is_set)  # the model is busy with the first image
        health = (await client.get("/healthz")).json()
        assert health["busy"] and health["in_model"] == 1
        rest = [asyncio.create_task(client.post("/predict?score_thresh=0", content=photo_bytes)) for _ in range(3)]
        await wait_until(lambda: batcher.queued == 3)
        assert (await client.get("/healthz")).json()["queued"] == 3
        barrier.release.set()
        return [r.json() for r in await asyncio.gather(first, *rest)], (await client.get("/info")).json()

    try:
        bodies, info = run_scenario(serve_predictor, scenario, max_batch=4)
    finally:
        barrier.release.set()
        barrier.handle.remove()
    assert barrier.sizes == [1, 3]  # the three that queued ran together
    assert info["stats"] == {"batches": 2, "images": 4, "largest_batch": 3, "failures": 0}
    single = bodies[0]["people"]
    for batched in bodies[1:]:  # same image, same answer, alone or in a batch (same size: no padding)
        assert len(batched["people"]) == len(single)
        np.testing.assert_allclose([p["box"] for p in batched["people"]], [p["box"] for p in single], atol=1e-2)


def test_max_batch_one_runs_images_one_at_a_time(serve_predictor, photo_bytes):
    barrier = ModelBarrier(serve_predictor.model)

    async def scenario(client, batcher):
        tasks = [asyncio.create_task(client.post("/predict", content=photo_bytes)) for _ in range(3)]
        await wait_until(barrier.entered.is_set)
        barrier.release.set()
        return [r.status_code for r in await asyncio.gather(*tasks)]

    try:
        codes = run_scenario(serve_predictor, scenario, max_batch=1)
    finally:
        barrier.release.set()
        barrier.handle.remove()
    assert codes == [200, 200, 200] and barrier.sizes == [1, 1, 1]


def test_a_failing_image_in_a_batch_fails_alone(serve_predictor, photo_bytes):
    buffer = io.BytesIO()
    Image.new("RGB", (77, 50), "gray").save(buffer, format="PNG")
    barrier = ModelBarrier(serve_predictor.model, fail_width=77)

    async def scenario(client, batcher):
        first = asyncio.create_task(client.post("/predict", content=photo_bytes))
        await wait_until(barrier.entered.is_set)
        bad = asyncio.create_task(client.post("/predict", content=buffer.getvalue()))
        good = asyncio.create_task(client.post("/predict", content=photo_bytes))
        await wait_until(lambda: batcher.queued == 2)
        barrier.release.set()
        return [await first, await bad, await good]

    try:
        first, bad, good = run_scenario(serve_predictor, scenario, max_batch=4)
    finally:
        barrier.release.set()
        barrier.handle.remove()
    assert barrier.sizes == [1, 2, 1, 1]  # the batch of two failed, then each image ran alone
    assert first.status_code == good.status_code == 200
    assert bad.status_code == 500 and bad.json()["id"] in bad.json()["message"]


def test_batcher_collects_what_arrives_within_the_wait():
    seen = []

    def double(items):
        seen.append(list(items))
        return [2 * x for x in items]

    async def main():
        batcher = Batcher(double, max_batch=3, max_wait_ms=50)
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert seen == [[0, 1, 2], [3, 4]]


def test_a_closed_batcher_starts_again_on_the_next_request():
    async def main():
        batcher = Batcher(lambda items: [x + 1 for x in items], max_batch=2, max_wait_ms=0)
        first = await batcher.submit(1)
        await batcher.close()  # e.g. the app's lifespan ended, then the app is served again
        try:
            return first, await batcher.submit(2)
        finally:
            await batcher.close()

    assert asyncio.run(main()) == (2, 3)
