"""PNG encoding of 512² RGB images: ``robust.io.png.encode_png`` vs Pillow and OpenCV defaults, same run.

Images: a synthetic 512² render (smooth), the same with Gaussian noise σ = 20/255 (noisy: what the noise
corruptions write) and that noise blurred (σ = 3 px). ``extra_info["kbytes"]`` holds each file size.

    python -m pytest benchmarks/test_bench_png.py --benchmark-only --benchmark-columns=mean,rounds
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from robust.io.png import encode_png
from robust.synth import render_view, sample_point_views, sample_scene


def _pillow(a: np.ndarray, level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


ENCODERS = {
    "encode_png": encode_png,
    "pillow_level1": lambda a: _pillow(a, 1),
    "pillow_default": lambda a: _pillow(a, 6),
    "opencv_level1": lambda a: cv2.imencode(".png", a[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes(),
}


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    scene = sample_scene(0)
    rgb = render_view(scene, sample_point_views(scene, 0, 1)[0], 512, minimal=True)["rgb"]
    smooth = np.ascontiguousarray((rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    noisy = np.clip(smooth + np.random.default_rng(0).normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    return {"smooth": smooth, "noisy": noisy, "blurred": cv2.GaussianBlur(noisy, (0, 0), 3)}


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("kind", ["smooth", "noisy", "blurred"])
def test_bench_png_encode(benchmark, images, kind, encoder):
    benchmark.group = f"PNG encode 512² {kind}"
    data = benchmark(ENCODERS[encoder], images[kind])
    with Image.open(io.BytesIO(data)) as img:
        np.testing.assert_array_equal(np.asarray(img), images[kind])
    benchmark.extra_info["kbytes"] = round(len(data) / 1000, 1)
