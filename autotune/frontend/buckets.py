"""Shape ranges and the buckets that serve them: what a range artifact runs at a call's shape.

A range artifact holds one static-shape entry function per *bucket*: a value per symbolic dim
(``batch``, ``seq``…) taken from that dim's *ladder*. A call runs the smallest bucket that covers
its shape: its inputs padded up to the bucket (``ShapePlan.pad``), the outputs cropped back
(``ShapePlan.crop``). Padding is used only on dims where it cannot change the outputs (checked
when the plan is made, ``frontend.ranged``); other dims get a ladder of every value in their range.
Numpy only: the production loader dispatches with it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import AutotuneError
from .specs import MASK_HINT

MAX_EXACT_VALUES = 16  # a dim padding would change gets one bucket per value: at most this many


@dataclass(frozen=True)
class DimRange:
    """The values ``low..high`` (inclusive) one dim may take; ``low == high`` is a fixed dim.
    ``rungs``, where given, are the bucket values for it instead of ``ladder``'s default (a
    caller that knows where the dim's cost lies, e.g. a decoder step's source length, which only
    its cross-attention reads, wants fewer buckets than an encoder's)."""

    low: int
    high: int
    rungs: tuple[int, ...] = ()

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}..{self.high}"

    @property
    def fixed(self) -> bool:
        return self.low == self.high


def parse_dims(text: str, what: str) -> tuple[DimRange, ...]:
    """``1..8x1..128`` or ``1x128`` → one ``DimRange`` per dim; ``what`` names the flag in errors."""
    dims = []
    for position, part in enumerate(text.lower().split("x")):
        low, sep, high = part.partition("..")
        try:
            dim = DimRange(int(low), int(high) if sep else int(low))
        except ValueError:
            raise AutotuneError(f"bad {what}: dim {position} is {part!r}; expected N or LO..HI, "
                                "e.g. input_ids=1..8x1..128") from None
        if dim.low < 1:
            raise AutotuneError(f"bad {what}: dim {position} is {part!r}; dims start at 1")
        if dim.high < dim.low:
            raise AutotuneError(f"bad {what}: dim {position} is the empty range {part!r}")
        dims.append(dim)
    return tuple(dims)


def as_dims(shape, what: str) -> tuple[DimRange, ...]:
    """A shape as the Python API takes it (``(1, 128)``, ``((1, 8), (1, 128))``, ``"1..8x1..128"``)
    as ``DimRange``s."""
    if isinstance(shape, str):
        return parse_dims(shape, what)
    dims = []
    for position, dim in enumerate(shape):
        if isinstance(dim, DimRange):
            dims.append(dim)
        elif isinstance(dim, (tuple, list)) and len(dim) == 2:
            dims.append(DimRange(int(dim[0]), int(dim[1])))
        elif isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
            dims.append(DimRange(int(dim), int(dim)))
        else:
            raise AutotuneError(f"bad {what}: dim {position} is {dim!r}; expected an int or (low, high)")
    checked = parse_dims("x".join(map(str, dims)), what)  # the same checks as the CLI's
    return tuple(dataclasses.replace(c, rungs=d.rungs) for c, d in zip(checked, dims))


ROW_TILE = 4  # the rows of the heuristic matmul's wide register tile (``schedules.matmul``)
SMALL_SEQUENCE = 16  # below this many positions a sequence's rungs are ROW_TILE apart


def powers_of_two(dim: DimRange) -> DimRange:
    """``dim`` (a sequence) with rungs at the powers of two from ``ROW_TILE`` up to its top
    (rounded up to a multiple of ``ROW_TILE``): few buckets."""
    top = -(-dim.high // ROW_TILE) * ROW_TILE
    rungs, value = {top}, ROW_TILE
    while value < top:
        if value >= dim.low:
            rungs.add(value)
        value *= 2
    return dataclasses.replace(dim, rungs=tuple(sorted(rungs)))


def ladder(dim: DimRange, pad_safe: bool, leading: bool = True, unit: int = ROW_TILE) -> list[int]:
    """The bucket values of a dim: every value where padding is not safe.

    A leading dim (a batch) gets powers of two up to 8, then steps of a quarter of the power of
    two below, from its ``low`` to its ``high``. Any other (a sequence) gets multiples of ``unit``
    (``schedules.matmul.sequence_rung_unit``: rows at which every bucket packs a weight one way, so
    the artifact stores it once; its top rounded up to one): steps of ``ROW_TILE`` below
    ``SMALL_SEQUENCE`` (a call there is mostly fixed cost), then of an eighth of the power of two
    below, at least ``unit``. With 2: 4, 8, 12, 16, 18 … 32, 36 … 64, 72 … 128; from 8 units up no
    value pads by more than 1.125× (ONNX Runtime runs the exact shape: padding is paid in full).
    """
    if not pad_safe:
        return list(range(dim.low, dim.high + 1))
    if dim.rungs:  # the caller's: they cover the range (its top is the last)
        rungs = sorted(r for r in set(dim.rungs) if r >= dim.low)
        return rungs if rungs and rungs[-1] >= dim.high else [*rungs, dim.high]
    if leading:
        return _batch_rungs(dim)
    top = -(-dim.high // unit) * unit
    step = _sequence_step(dim.low, unit)
    rungs, value = [], -(-dim.low // step) * step
    while value < top:
        rungs.append(value)
        step = _sequence_step(value, unit)
        value = (value // step + 1) * step
    return [*rungs, top]


def _sequence_step(value: int, unit: int) -> int:
    if value < SMALL_SEQUENCE:
        return max(unit, ROW_TILE)
    return max(unit, 2 ** int(math.log2(value)) // 8)


def _batch_rungs(dim: DimRange) -> list[int]:
    rungs = {dim.low, dim.high}
    value = 1
    while value < dim.high:
        if value > dim.low:
            rungs.add(value)
        value = value * 2 if value < 8 else value + max(4, 2 ** (int(math.log2(value)) - 2))
    return sorted(rungs)


@dataclass(frozen=True)
class Bucket:
    """One entry function of a range artifact and the value of each symbolic dim it was built for."""

    function: str
    dims: dict[str, int]


BUCKET_PREFIX = "bucket_"


def bucket_function_name(values: dict[str, int]) -> str:
    """``bucket_4_128``: the entry function of the bucket with these values of the ranged dims."""
    return BUCKET_PREFIX + "_".join(f"{value}" for value in values.values())


@dataclass
class ShapePlan:
    """How a range artifact serves every shape: the dims' ranges and ladders, which dim of each
    input and output is which, and where padding fills with zeros (attention masks) rather than by
    repeating the last row or position."""

    dims: dict[str, DimRange]
    ladders: dict[str, list[int]]
    inputs: dict[str, list[str | int]]   # per input, each dim a symbol or its fixed size
    outputs: dict[str, list[str | int]]
    exact: list[str] = field(default_factory=list)  # dims padding would change: a call runs at their value
    faster: dict[str, dict[str, int]] = field(default_factory=dict)  # a bucket → a larger one that runs faster

    def buckets(self) -> list[Bucket]:
        """Every bucket: the product of the ladders."""
        names = list(self.ladders)
        return [Bucket(bucket_function_name(dict(zip(names, values))), dict(zip(names, values)))
                for values in itertools.product(*self.ladders.values())]

    def shape_of(self, name: str, sizes: dict[str, int]) -> tuple[int, ...]:
        """Input or output ``name``'s shape when the symbolic dims take ``sizes``."""
        dims = self.inputs.get(name, self.outputs.get(name))
        return tuple(sizes[d] if isinstance(d, str) else d for d in dims)

    def sizes_of(self, arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> dict[str, int]:
        """The symbolic dims' values in a call, or one error naming the input, dim, value and range
        (or the two inputs that disagree on a shared dim)."""
        sizes: dict[str, tuple[int, str]] = {}
        for name, dims in self.inputs.items():
            array = arrays[name]
            if array.ndim != len(dims) or str(array.dtype) != dtypes[name]:
                raise AutotuneError(f"input {name!r}: got {array.dtype}{list(array.shape)}, model takes "
                                    f"{dtypes[name]}[{'x'.join(self._dim_text(d) for d in dims)}]")
            for position, (dim, size) in enumerate(zip(dims, array.shape)):
                self._check_dim(name, position, dim, size, sizes)
        return {symbol: size for symbol, (size, _) in sizes.items()}

    def _dim_text(self, dim: str | int) -> str:
        return str(self.dims[dim]) if isinstance(dim, str) else str(dim)

    def _check_dim(self, name: str, position: int, dim: str | int, size: int, sizes: dict) -> None:
        if isinstance(dim, int):
            if size != dim:
                raise AutotuneError(f"input {name!r} dim {position}: got {size}, the model fixes it at {dim}")
            return
        allowed = self.dims[dim]
        if not allowed.low <= size <= allowed.high:
            raise AutotuneError(f"input {name!r} dim {position} ({dim}): got {size}, outside the range "
                                f"{allowed} the artifact was compiled for")
        seen = sizes.setdefault(dim, (size, name))
        if seen[0] != size:
            raise AutotuneError(f"input {name!r} dim {position} ({dim}) is {size}, but input {seen[1]!r} "
                                f"has {seen[0]} for the same dim")

    def largest(self) -> Bucket:
        """The bucket of every dim at the top of its range."""
        return self.bucket_for({d: r.high for d, r in self.dims.items()})

    def bucket_for(self, sizes: dict[str, int]) -> Bucket:
        """The bucket that serves ``sizes``: the smallest covering them (each dim's lowest rung at
        or above its value; a rung may lie past the range's top, as ``ladder`` rounds), or the
        larger bucket measured faster than it (``faster``)."""
        values = {d: next(r for r in rungs if r >= sizes[d]) for d, rungs in self.ladders.items()}
        values = self.faster.get(bucket_function_name(values), values)
        return Bucket(bucket_function_name(values), values)

    def covering(self, bucket: Bucket) -> list[Bucket]:
        """Every bucket that may serve ``bucket``'s calls: as large in each dim, the same in the
        ``exact`` ones (``bucket`` among them)."""
        return [b for b in self.buckets()
                if all(b.dims[d] == v if d in self.exact else b.dims[d] >= v for d, v in bucket.dims.items())]

    def pad(self, arrays: dict[str, np.ndarray], bucket: Bucket) -> dict[str, np.ndarray]:
        """The inputs padded up to ``bucket``: attention masks with zeros past the first dim (the
        padding is masked out), everything else by repeating the last row or position."""
        padded = {}
        for name, array in arrays.items():
            target = self.shape_of(name, bucket.dims)
            widths = [(0, t - s) for s, t in zip(array.shape, target)]
            if not any(w for _, w in widths):
                padded[name] = array
                continue
            padded[name] = _padded(array, widths, zero_after_first=_is_mask(name, array.dtype))
        return padded

    def crop(self, outputs: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """The outputs of a padded call cut back to the call's shape."""
        return {name: out[tuple(slice(0, n) for n in self.shape_of(name, sizes))]
                for name, out in outputs.items()}

    def as_dict(self) -> dict:
        return {"dims": {d: [r.low, r.high] for d, r in self.dims.items()}, "ladders": self.ladders,
                "inputs": self.inputs, "outputs": self.outputs, "exact": self.exact, "faster": self.faster}

    @classmethod
    def from_dict(cls, data: dict) -> ShapePlan:
        return cls({d: DimRange(*r) for d, r in data["dims"].items()},
                   {d: list(r) for d, r in data["ladders"].items()},
                   {k: list(v) for k, v in data["inputs"].items()},
                   {k: list(v) for k, v in data["outputs"].items()}, list(data.get("exact", [])),
                   dict(data.get("faster", {})))


def _is_mask(name: str, dtype) -> bool:
    return MASK_HINT in name.lower() and (np.issubdtype(dtype, np.integer) or dtype == np.bool_)


def _padded(array: np.ndarray, widths: list[tuple[int, int]], zero_after_first: bool) -> np.ndarray:
    """``array`` padded by ``widths``: dim 0 by repeating its last entry (a whole row: a batch row
    stays a valid input); other dims with zeros for masks, else by repeating the last entry."""
    out = np.pad(array, [widths[0]] + [(0, 0)] * (array.ndim - 1), mode="edge") if widths[0][1] else array
    rest = [(0, 0)] + widths[1:]
    if any(w for _, w in rest):
        out = np.pad(out, rest, mode="constant") if zero_after_first else np.pad(out, rest, mode="edge")
    return np.ascontiguousarray(out)
