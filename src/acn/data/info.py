"""What a model must know about its data, and the names of a dataset's splits. No torch here:
the command line reads these without loading the networks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Every dataset has these three splits; training examples are the code bank's rows.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataInfo:
    """What a model must know about its data.

    Attributes:
        name: dataset name, with its variant (``digits-binarized@8`` etc.).
        image_shape: (C, H, W).
        levels: values a pixel can take (2 when binarized).
        num_classes: number of labels (0 when unlabelled).
    """

    name: str
    image_shape: tuple[int, int, int]
    levels: int
    num_classes: int

    @property
    def dims(self) -> int:
        """C * H * W, for bits per dimension."""
        c, h, w = self.image_shape
        return c * h * w

    def to_dict(self) -> dict[str, Any]:
        """JSON- and checkpoint-safe form (the shape as a list)."""
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "levels": self.levels,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataInfo:
        """The inverse of :meth:`to_dict`.

        Raises:
            KeyError, TypeError, ValueError: ``values`` lacks a field or holds a wrong type.
        """
        shape = tuple(int(v) for v in values["image_shape"])
        if len(shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {values['image_shape']!r}")
        return cls(str(values["name"]), shape, int(values["levels"]), int(values["num_classes"]))

    def matches(self, other: DataInfo) -> bool:
        """Same dataset variant and image shape (what a model trained on one can score)."""
        return (self.name, self.image_shape) == (other.name, other.image_shape)
