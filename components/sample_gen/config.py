"""How fine-tuning samples are built: one checked configuration (see `samples`' docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from components.common.user_vectors import DEFAULT_LAST_N

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SampleConfig:
    """How samples are built; see the module docstring for the meaning of each option."""

    negatives: int = 4
    negative_sampling: str = "uniform"  # | "popularity" (train counts ^ 0.75)
    split: str = "time"  # | "random"
    val_size: float | None = None  # time: events per user (1); random: a fraction (0.1)
    test_size: float | None = None
    last_n: int | None = DEFAULT_LAST_N
    half_life: float | None = None
    missing_user: str = "drop"  # | "mean"
    min_weight: float | None = None  # target events below this weight are not positives
    text: bool = True  # False: no .txt files (the ids and interaction tables still)
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("negative_sampling", self.negative_sampling, ("uniform", "popularity"))
        _one_of("split", self.split, ("time", "random"))
        _one_of("missing_user", self.missing_user, ("drop", "mean"))
        if self.negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {self.negatives}")
        if self.last_n is not None and self.last_n < 1:
            raise ValueError(f"last_n must be at least 1 (or None), got {self.last_n}")
        if self.half_life is not None and self.half_life <= 0:
            raise ValueError(f"half_life must be positive, got {self.half_life}")
        val, test = self.holdout
        if self.split == "time" and not (float(val).is_integer() and float(test).is_integer()):
            raise ValueError("with split='time', val_size and test_size count events per user")
        if val < 0 or test < 0:
            raise ValueError("val_size and test_size must be >= 0")
        if self.split == "random" and val + test >= 1:
            raise ValueError("with split='random', val_size + test_size must be a fraction < 1")

    @property
    def holdout(self) -> tuple[float, float]:
        """(val_size, test_size) with the split's defaults filled in."""
        default = 1 if self.split == "time" else 0.1
        return (
            default if self.val_size is None else self.val_size,
            default if self.test_size is None else self.test_size,
        )


def _one_of(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
