"""Training-health rules over gradient statistics: non-finite, exploding, vanishing and dead layers.

Pure host-side logic on a few numbers per log step (the statistics are already on the host), so it is
cheap and testable without a model. The gradient monitor calls it and routes alerts to the logger.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Alert:
    kind: str  # "nonfinite", "exploding", "vanishing", "dead"
    message: str


@dataclass
class TrainingHealth:
    """Stateful checks, fed once per gradient log step.

    Args:
        explode_factor: Alert when the total norm exceeds this multiple of its running median.
        window: Log steps in the running median.
        min_history: Log steps needed before the exploding rule can fire (early steps are noisy).
        vanish_threshold: A layer whose gradient norm is at or below this counts as vanishing.
        dead_patience: Consecutive vanishing log steps after which a layer is reported dead (once).
    """

    explode_factor: float = 10.0
    window: int = 50
    min_history: int = 5
    vanish_threshold: float = 1e-8
    dead_patience: int = 3
    _history: deque = field(init=False, repr=False)
    _vanishing_for: dict[str, int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._history = deque(maxlen=self.window)

    def check(self, total_norm: float, nonfinite: int, layer_norms: dict[str, float]) -> list[Alert]:
        alerts = []
        if nonfinite:
            alerts.append(Alert("nonfinite", f"{nonfinite} parameter(s) have non-finite gradients (NaN/inf)"))
        if math.isfinite(total_norm):
            if len(self._history) >= self.min_history:
                median = statistics.median(self._history)
                if median > 0 and total_norm > self.explode_factor * median:
                    alerts.append(
                        Alert(
                            "exploding",
                            f"gradient norm {total_norm:.4g} is {total_norm / median:.1f}x its running median "
                            f"{median:.4g} (threshold {self.explode_factor}x)",
                        )
                    )
            self._history.append(total_norm)
        for layer, norm in layer_norms.items():
            if math.isfinite(norm) and norm <= self.vanish_threshold:
                self._vanishing_for[layer] = self._vanishing_for.get(layer, 0) + 1
                if self._vanishing_for[layer] == 1:
                    alerts.append(
                        Alert("vanishing", f"layer {layer}: gradient norm {norm:.3g} ≤ {self.vanish_threshold:g}")
                    )
                if self._vanishing_for[layer] == self.dead_patience:
                    alerts.append(
                        Alert("dead", f"layer {layer}: no gradient for {self.dead_patience} consecutive log steps")
                    )
            else:
                self._vanishing_for.pop(layer, None)
        return alerts
