"""Cross-Task Consistency (XTC): perceptual consistency losses, gradient balancing, win-rate selection,
the task graph and the consistency energy (unsupervised error and OOD score).

>>> from consistency import balance_weights, consistency_energy, path_distances
"""

from consistency.balance import balance_weights, gradient_magnitudes
from consistency.energy import ConsistencyEnergy, EnergyStats, consistency_energy, path_distances, raw_energy
from consistency.graph import TaskGraph, freeze
from consistency.method import build_xtc, load_trained
from consistency.winrate import WinRateSelector
from consistency.xtc import XTC

__all__ = [
    "XTC",
    "ConsistencyEnergy",
    "EnergyStats",
    "TaskGraph",
    "WinRateSelector",
    "balance_weights",
    "build_xtc",
    "consistency_energy",
    "freeze",
    "gradient_magnitudes",
    "load_trained",
    "path_distances",
    "raw_energy",
]
