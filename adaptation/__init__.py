"""Test-time adaptation: Rapid Network Adaptation (FiLM controller) and the TTO/TENT/norm baselines.

>>> from adaptation import RNA, adapt, sparse_depth
>>> signal = sparse_depth(batch["depth_euclidean"], batch["mask_valid"], fraction=0.0025)
>>> out = adapt(model, batch, signal, method="tto", steps=20)       # gradient steps per image
>>> out = adapt(rna, batch, signal, method="rna")                    # one feed-forward pass
>>> rna = RNA(model, **TWO_PASS)                                     # the released (slower) chain
"""

from adaptation.film import SpatialFiLM, film_sites
from adaptation.methods import METHODS, TENT, TTO, Method, NoAdapt, NormAdapt, RNAMethod, adapt, make_method
from adaptation.rna import (
    FAST,
    RNA,
    TWO_PASS,
    Controller,
    RNATrainConfig,
    load_rna,
    save_rna,
    shift_augmentation,
    train_rna,
)
from adaptation.signals import Signal, dense_map, signal_loss, sparse_clicks, sparse_depth
from adaptation.tto import entropy, select_params, tto_per_sample, tto_shared

__all__ = [
    "FAST",
    "METHODS",
    "RNA",
    "TENT",
    "TTO",
    "TWO_PASS",
    "Controller",
    "Method",
    "NoAdapt",
    "NormAdapt",
    "RNAMethod",
    "RNATrainConfig",
    "Signal",
    "SpatialFiLM",
    "adapt",
    "dense_map",
    "entropy",
    "film_sites",
    "load_rna",
    "make_method",
    "save_rna",
    "select_params",
    "shift_augmentation",
    "signal_loss",
    "sparse_clicks",
    "sparse_depth",
    "train_rna",
    "tto_per_sample",
    "tto_shared",
]
