"""Cross-Domain Ensembles (XDE) and BRAVE-style multi-backbone ensembling.

>>> from ensembles import MIDDLE_DOMAINS, merge_laplace
>>> mid = MIDDLE_DOMAINS["sobel_edges"](rgb)          # (B,1,H,W)
>>> mean, sigma = merge_laplace(mu, log_b)             # (K,B,C,H,W) -> (B,C,H,W) twice
"""

from ensembles.brave import BackboneSpec, BraveFusion
from ensembles.domains import MIDDLE_DOMAINS, MiddleDomain, middle_domain
from ensembles.merging import disagreement, merge_laplace, merge_weights
from ensembles.method import build_xde, load_ensemble_state
from ensembles.xde import (
    ConsistencyTraining,
    SigmaTraining,
    XDEnsemble,
    consistency_loss,
    consistency_weights,
    path_model,
    perturb,
    sigma_loss,
)

__all__ = [
    "MIDDLE_DOMAINS",
    "BackboneSpec",
    "BraveFusion",
    "ConsistencyTraining",
    "MiddleDomain",
    "SigmaTraining",
    "XDEnsemble",
    "build_xde",
    "consistency_loss",
    "consistency_weights",
    "disagreement",
    "load_ensemble_state",
    "merge_laplace",
    "merge_weights",
    "middle_domain",
    "path_model",
    "perturb",
    "sigma_loss",
]
