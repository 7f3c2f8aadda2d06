"""Taskonomy-format I/O: PNG codecs with explicit bit depths, the dataset reader and an atomic writer."""

from robust.io.atomic import atomic_write_bytes, atomic_write_text
from robust.io.png import DataError, read_png, write_png
from robust.io.taskonomy import (
    POINT_INFO,
    ResizeCrop,
    TaskonomyDataset,
    TaskonomyIndex,
    TaskonomyLoader,
    ViewKey,
    collate_views,
    decode_batch,
    decode_values,
    domain_path,
    intrinsics_from_fov,
    read_domain,
    read_point_info,
    read_split,
    write_batch,
    write_view,
)

__all__ = [
    "POINT_INFO",
    "DataError",
    "ResizeCrop",
    "TaskonomyDataset",
    "TaskonomyIndex",
    "TaskonomyLoader",
    "ViewKey",
    "atomic_write_bytes",
    "atomic_write_text",
    "collate_views",
    "decode_batch",
    "decode_values",
    "domain_path",
    "intrinsics_from_fov",
    "read_domain",
    "read_png",
    "read_point_info",
    "read_split",
    "write_batch",
    "write_png",
    "write_view",
]
