"""One Euro filter over arrays of landmarks (Casiez, Roussel, Vogel, CHI 2012).

Each value is low-pass filtered with a cutoff that rises with its speed:
``fc = min_cutoff + beta * |dx/dt|`` (eq. 4 of the paper), the smoothing
factor of each step is ``alpha = 1 / (1 + tau / dt)`` with
``tau = 1 / (2 pi fc)`` (eq. 3), and the speed itself is low-passed at
``d_cutoff``. Slow movement is smoothed hard (less jitter), fast movement
lightly (less lag). ``beta`` is in units of 1 / (value unit): pixels for 2-D
landmarks, metres for 3-D ones.
"""

from __future__ import annotations

import numpy as np

from edge.errors import StateError


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff_hz, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Filters a fixed-shape float array sample by sample; NaN entries pass through.

    An entry that is NaN outputs NaN and restarts its filter, so a landmark
    that comes back after a gap (a depth hole) starts from its new value
    instead of being pulled towards a stale one.
    """

    def __init__(self, min_cutoff_hz: float, beta: float, d_cutoff_hz: float) -> None:
        if min_cutoff_hz <= 0 or d_cutoff_hz <= 0 or beta < 0:
            raise ValueError(
                f"One Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got "
                f"{min_cutoff_hz}, {d_cutoff_hz}, {beta}"
            )
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.d_cutoff_hz = d_cutoff_hz
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next sample passes unfiltered."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t_s: float | None = None

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        """Filter one sample taken at time ``t_s`` (seconds, increasing); returns a new array.

        Raises :class:`StateError` when time goes backwards and ValueError when
        the shape changes between samples.
        """
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t_s is None or self._dx is None:
            self._x, self._dx, self._t_s = x.copy(), np.zeros_like(x), t_s
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"sample shape {x.shape} differs from earlier {self._x.shape}")
        dt = t_s - self._t_s
        if dt < 0:
            raise StateError(
                f"sample time went back by {-dt:.3f} s",
                "reset the filter when a source restarts or loops",
            )
        if dt == 0:  # the same instant again: nothing new to integrate
            return np.where(np.isnan(x), np.nan, self._x)
        fresh = np.isnan(self._x) & ~np.isnan(x)
        prev = np.where(fresh, x, self._x)
        dx = (x - prev) / dt
        dx_hat = self._dx + _alpha(self.d_cutoff_hz, dt) * (dx - self._dx)
        dx_hat = np.where(fresh, 0.0, dx_hat)
        cutoff = self.min_cutoff_hz + self.beta * np.abs(dx_hat)
        x_hat = prev + _alpha(cutoff, dt) * (x - prev)
        self._x = x_hat
        self._dx = np.where(np.isnan(x_hat), 0.0, dx_hat)
        self._t_s = t_s
        return x_hat.copy()
