"""What a model takes and gives: each input's and output's name, frozen shape and dtype."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AutotuneError

MASK_HINT = "mask"  # an integer or boolean input named like this is an attention mask


@dataclass(frozen=True)
class TensorSpec:
    """Name, frozen shape and dtype of a model input or output.

    ``index_range`` is ``(low, high)``, inclusive, for an integer input that indexes a table (token,
    position, token-type ids): the values the model accepts, as ONNX's ``Gather`` defines them.
    ``ranges`` is ``(low, high)`` per dim for an input of a range artifact (``shape`` is then its
    largest shape).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    index_range: tuple[int, int] | None = None
    ranges: tuple[tuple[int, int], ...] | None = None

    def as_dict(self) -> dict:
        spec = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.index_range is not None:
            spec["index_range"] = list(self.index_range)
        if self.ranges is not None:
            spec["range"] = [list(r) for r in self.ranges]
        return spec

    def range_text(self) -> str:
        """``1..8x1..128``: the shapes the input takes."""
        ranges = self.ranges or tuple((d, d) for d in self.shape)
        return "x".join(str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in ranges)

    @classmethod
    def from_dict(cls, spec: dict) -> TensorSpec:
        """The spec a manifest records (``as_dict``'s output)."""
        index_range, ranges = spec.get("index_range"), spec.get("range")
        return cls(spec["name"], tuple(spec["shape"]), spec["dtype"],
                   tuple(index_range) if index_range else None,
                   tuple(tuple(r) for r in ranges) if ranges else None)

    def check_indices(self, array: np.ndarray, what: str = "input") -> None:
        """Raise naming the input, its first value outside ``index_range`` (a table's rows, ONNX's
        negative indices included) and where it is; nothing for inputs that index no table."""
        if self.index_range is None or array.size == 0:
            return
        low, high = self.index_range
        outside = np.flatnonzero((array < low) | (array > high))
        if outside.size:
            where = [int(i) for i in np.unravel_index(outside[0], array.shape)]
            raise AutotuneError(f"{what} {self.name!r} holds {array.flat[outside[0]]} at {where}, outside "
                                f"[{low}, {high}], the rows of the table it indexes ({outside.size} such "
                                f"value{'s' if outside.size > 1 else ''})")
