"""Import the installed ``imagecorruptions`` 1.1.2 (PyPI) on current numpy / scikit-image / setuptools, unchanged.

Three things broke since its release; each is patched at import time in the package's own namespace (no code is
vendored, nothing global changes):

- ``from pkg_resources import resource_filename``: setuptools no longer ships ``pkg_resources``; a stand-in module
  resolving package-relative paths is registered only if the real one is missing.
- ``skimage.filters.gaussian(..., multichannel=True)``: removed in scikit-image 0.19+; the package's ``gaussian``
  name is wrapped to pass ``channel_axis=-1`` instead.
- ``np.float_`` (plasma fractal): removed in numpy 2; the package's ``np`` name points to a view of numpy with it.
"""

from __future__ import annotations

import importlib
import os
import sys
import types


def _resource_filename(package: str, resource: str) -> str:
    module = importlib.import_module(package)
    return os.path.join(os.path.dirname(module.__file__), resource)


def load_imagecorruptions() -> types.ModuleType:
    """The ``imagecorruptions`` package with the compatibility patches applied (idempotent)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        sys.modules["pkg_resources"] = types.SimpleNamespace(resource_filename=_resource_filename)
    import imagecorruptions
    import numpy as np
    from imagecorruptions import corruptions

    if not getattr(corruptions, "_robust_compat", False):
        gaussian = corruptions.gaussian

        def gaussian_compat(image, *args, multichannel=None, **kwargs):
            if multichannel:
                kwargs.setdefault("channel_axis", -1)
            return gaussian(image, *args, **kwargs)

        corruptions.gaussian = gaussian_compat
        np_view = types.ModuleType("numpy_compat")
        np_view.__dict__.update(np.__dict__)
        np_view.float_ = np.float64
        corruptions.np = np_view
        corruptions._robust_compat = True
    return imagecorruptions
