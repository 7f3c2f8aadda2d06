"""Registers the 19 ImageNet-C corruptions (Hendrycks & Dietterich; ``imagecorruptions`` 1.1.2 severity tables) in
the canonical order, and the reference's subsets.

The ops live in :mod:`.noise`, :mod:`.blur`, :mod:`.weather` (snow, frost, fog, spatter) and :mod:`.digital`
(brightness, contrast, saturate, elastic_transform, pixelate, jpeg_compression).
"""

from __future__ import annotations

from corruptions3d.core import register_corruption
from corruptions3d.functional import blur, digital, noise, weather

__all__ = ["IMAGENET_C", "imagenet_c_names"]

# (op, severity table, continuous ranges for training-time sampling, stochastic), canonical order
_SPECS = (
    (noise.gaussian_noise, noise.GAUSSIAN_NOISE, {"sigma": (0.0, 0.38)}, True),
    (noise.shot_noise, noise.SHOT_NOISE, {"photons": (3.0, 60.0)}, True),
    (noise.impulse_noise, noise.IMPULSE_NOISE, {"amount": (0.0, 0.27)}, True),
    (blur.defocus_blur, blur.DEFOCUS_BLUR, {"radius": (3, 10), "alias_sigma": (0.1, 0.5)}, False),
    (blur.glass_blur, blur.GLASS_BLUR, {"sigma": (0.7, 1.5), "max_delta": (1, 4), "iterations": (1, 3)}, True),
    (blur.motion_blur, blur.MOTION_BLUR, {"radius": (10, 20), "sigma": (3.0, 15.0)}, True),
    (blur.zoom_blur, blur.ZOOM_BLUR, {}, False),
    (
        weather.snow,
        weather.SNOW,
        {"mean": (0.1, 0.55), "zoom": (2.0, 4.5), "threshold": (0.5, 0.9), "blend": (0.55, 0.8)},
        True,
    ),
    (weather.frost, weather.FROST, {"image_coeff": (0.6, 1.0), "frost_coeff": (0.4, 0.75)}, True),
    (weather.fog, weather.FOG, {"strength": (1.5, 3.0), "wibble_decay": (1.4, 2.0)}, True),
    (digital.brightness, digital.BRIGHTNESS, {"value_shift": (0.0, 0.5)}, False),
    (digital.contrast, digital.CONTRAST, {"factor": (0.05, 1.0)}, False),
    (digital.elastic_transform, digital.ELASTIC_TRANSFORM, {"alpha": (0.0, 30.0)}, True),
    (digital.pixelate, digital.PIXELATE, {"scale": (0.25, 1.0)}, False),
    (digital.jpeg_compression, digital.JPEG_COMPRESSION, {"quality": (7, 25)}, False),
    (noise.speckle_noise, noise.SPECKLE_NOISE, {"sigma": (0.0, 0.6)}, True),
    (blur.gaussian_blur, blur.GAUSSIAN_BLUR, {"sigma": (1.0, 6.0)}, False),
    (
        weather.spatter,
        weather.SPATTER,
        {"blur_sigma": (1.0, 4.0), "threshold": (0.65, 0.69), "intensity": (0.5, 1.5)},
        True,
    ),
    (digital.saturate, digital.SATURATE, {"scale": (0.1, 20.0), "shift": (0.0, 0.2)}, False),
)
_IMAGE_BY_IMAGE = (noise.gaussian_noise, noise.speckle_noise, digital.pixelate, digital.jpeg_compression)
"""Ops that already loop over images into one buffer: CPU chunking (``core.CPU_CHUNK_PIXELS``) only adds copies."""
for _fn, _table, _ranges, _stochastic in _SPECS:
    register_corruption(
        _fn.__name__,
        family="imagenet_c",
        severities=_table,
        ranges=_ranges,
        stochastic=_stochastic,
        cpu_chunks=_fn not in _IMAGE_BY_IMAGE,
    )(_fn)

IMAGENET_C = tuple(fn.__name__ for fn, *_ in _SPECS)
"""All 19 names in ``imagecorruptions`` order (indices = its ``corruption_number``)."""

_SUBSETS = {
    "common": slice(0, 15),
    "validation": slice(15, 19),
    "all": slice(0, 19),
    "noise": slice(0, 3),
    "blur": slice(3, 7),
    "weather": slice(7, 11),
    "digital": slice(11, 15),
}


def imagenet_c_names(subset: str = "common") -> list[str]:
    """Names of an ``imagecorruptions`` subset: common (15), validation (4), all, noise, blur, weather, digital."""
    if subset not in _SUBSETS:
        raise ValueError(f"unknown ImageNet-C subset {subset!r}; expected one of {sorted(_SUBSETS)}")
    return list(IMAGENET_C[_SUBSETS[subset]])
