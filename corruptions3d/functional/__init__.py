"""Functional corruption ops on ``(B,3,H,W)`` tensors in [0,1], any device.

Each op: ``name(rgb, *geometry, severity=None, params=None, generator=None) -> (B,3,H,W)``.
"""
