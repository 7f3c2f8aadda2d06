"""Cross-Task Consistency (XTC): perceptual consistency losses, gradient balancing, win-rate selection,
the task graph and the consistency energy (unsupervised error and OOD score).

>>> from consistency import balance_weights, consistency_energy, path_distances
"""

from consistency.balance import balance_weights, gradient_magnitudes
from consistency.energy import EnergyStats, consistency_energy, path_distances, raw_energy
from consistency.graph import TaskGraph, freeze
from consistency.winrate import WinRateSelector

__all__ = [
    "EnergyStats",
    "TaskGraph",
    "WinRateSelector",
    "balance_weights",
    "consistency_energy",
    "freeze",
    "gradient_magnitudes",
    "path_distances",
    "raw_energy",
]
