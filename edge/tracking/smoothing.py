"""One Euro filter over arrays of landmarks (Casiez, Roussel, Vogel, CHI 2012).

Each value is low-pass filtered with a cutoff that rises with its speed:
``fc = min_cutoff + beta * |dx/dt|`` (eq. 4 of the paper), the smoothing
factor of each step is ``alpha = 1 / (1 + tau / dt)`` with
``tau = 1 / (2 pi fc)`` (eq. 3), and the speed itself is low-passed at
``d_cutoff``. Slow movement is smoothed hard (less jitter), fast movement
lightly (less lag). ``beta`` is in units of 1 / (value unit): pixels for 2-D
landmarks, metres for 3-D ones. Each step is one compiled loop over the entries.
"""

from __future__ import annotations

import numpy as np

from edge.errors import StateError
from edge.jit import kernel


@kernel(
    "void(Array(float64, 1, 'C', readonly=True), float64[::1], float64[::1], float64, float64,"
    " float64, float64)"
)
def _step(x, x_prev, dx_prev, dt_s, min_cutoff_hz, beta, d_cutoff_hz):
    """One filter step per entry, in place on the state ``x_prev`` and ``dx_prev``."""
    alpha_d = 1.0 / (1.0 + (1.0 / (2.0 * np.pi * d_cutoff_hz)) / dt_s)
    for i in range(x.shape[0]):
        fresh = np.isnan(x_prev[i]) and not np.isnan(x[i])
        prev = x[i] if fresh else x_prev[i]
        dx = (x[i] - prev) / dt_s
        dx_hat = 0.0 if fresh else dx_prev[i] + alpha_d * (dx - dx_prev[i])
        cutoff = min_cutoff_hz + beta * abs(dx_hat)
        alpha = 1.0 / (1.0 + (1.0 / (2.0 * np.pi * cutoff)) / dt_s)
        x_hat = prev + alpha * (x[i] - prev)
        x_prev[i] = x_hat
        dx_prev[i] = 0.0 if np.isnan(x_hat) else dx_hat


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
            self._x, self._dx, self._t_s = x.copy(), np.zeros(x.shape), t_s
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
        _step(
            np.ascontiguousarray(x).reshape(-1),
            self._x.reshape(-1),
            self._dx.reshape(-1),
            dt,
            self.min_cutoff_hz,
            self.beta,
            self.d_cutoff_hz,
        )
        self._t_s = t_s
        return self._x.copy()
