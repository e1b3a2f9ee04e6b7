"""What a server is started with (the ``poseseg serve`` flags), as one typed dataclass."""
from __future__ import annotations

from dataclasses import dataclass

API_KEY_ENV = "POSESEG_API_KEY"
API_KEY_HEADER = "X-API-Key"


@dataclass
class ServeSettings:
    max_batch: int | None = None  # images run through the model together; None: 8 on a GPU, 1 on CPU
    max_wait_ms: float = 5.0  # how long the first queued image waits for company
    max_image_mb: float = 20.0  # request body limit
    max_pixels: int = 40_000_000  # decoded-size limit (decompression bombs)
    score_thresh: float = 0.5  # default of the score_thresh query option
    api_key: str | None = None  # required in the X-API-Key header (or Bearer) on all but /healthz and the page
    weights: str = ""  # the weights' file name, shown by /info

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_image_mb <= 0:
            raise ValueError(f"--max-image-mb must be positive, got {self.max_image_mb}")
        if not 0.0 <= self.score_thresh <= 1.0:
            raise ValueError(f"--score-thresh must be in [0, 1], got {self.score_thresh}")

    def batch_size_for(self, device) -> int:
        """``max_batch``, or by default 8 on a GPU and 1 on CPU (where a batch measured no faster than its images
        one by one, benchmarks/RESULTS.md, and makes every image in it wait for the slowest)."""
        if self.max_batch is not None:
            return self.max_batch
        return 8 if getattr(device, "type", str(device)) == "cuda" else 1

    @property
    def max_bytes(self) -> int:
        return int(self.max_image_mb * 2**20)
