"""Inputs a model accepts: for validation and benchmarks, made up or the user's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.text import one_line
from ..errors import AutotuneError
from .specs import MASK_HINT, TensorSpec

OTHER_INT_HIGH = 32  # integers that neither index a table nor mask: small non-negative values


def random_inputs(specs: list[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs the model accepts: table indices within the tables they index, attention masks as
    ones with some padding at the end of all rows but the first, normals for floats."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        if spec.index_range is not None:
            arrays[spec.name] = rng.integers(0, spec.index_range[1] + 1, spec.shape).astype(spec.dtype)
        elif MASK_HINT in spec.name.lower() and (spec.dtype.startswith("int") or spec.dtype == "bool"):
            arrays[spec.name] = padded_mask(spec.shape, spec.dtype)
        elif spec.dtype.startswith("int"):
            arrays[spec.name] = rng.integers(0, OTHER_INT_HIGH, spec.shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            arrays[spec.name] = np.ones(spec.shape, dtype=bool)
        else:
            arrays[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return arrays


def manifest_inputs(manifest: dict, sizes: dict[str, int] | None = None
                    ) -> tuple[list[TensorSpec], dict[str, np.ndarray]]:
    """The input specs a manifest records, and inputs the model accepts (``random_inputs``; a range
    artifact's at ``sizes`` per ranged dim, by default its largest shape)."""
    from dataclasses import replace

    from .buckets import ShapePlan

    specs = [TensorSpec.from_dict(spec) for spec in manifest["inputs"]]
    if sizes is None or not manifest["shape_plan"]:
        return specs, random_inputs(specs)
    plan = ShapePlan.from_dict(manifest["shape_plan"])
    return specs, random_inputs([replace(s, shape=plan.shape_of(s.name, sizes)) for s in specs])


def manifest_calls(manifest) -> dict[str, list[np.ndarray]]:
    """The entry function a manifest's artifact runs at its largest shape, with arguments it
    accepts there (``measure.profile.KernelTimer``'s calls)."""
    from .buckets import ShapePlan

    specs, inputs = manifest_inputs(manifest)
    function = ShapePlan.from_dict(manifest["shape_plan"]).largest().function if manifest["shape_plan"] else "main"
    return {function: [inputs[s.name] for s in specs]}


def padded_mask(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A ``[batch, seq]``-like mask of ones whose row ``r`` ends in ``r × seq / (2 × batch)`` zeros
    (the first row unpadded, none padded to half or more), as a batch of sentences of several
    lengths sends."""
    mask = np.ones(shape, dtype=dtype)
    if len(shape) >= 2:
        rows, seq = shape[0], shape[-1]
        for row in range(1, rows):
            mask[row, ..., seq - row * seq // (2 * rows):] = 0
    return mask


def inputs_from_file(path: str | Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The user's inputs from an ``.npz`` file, one array per input name, checked against ``specs``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise AutotuneError(f"cannot read inputs --inputs {path}: {one_line(err, 200)}") from None
    expected = [spec.name for spec in specs]
    if sorted(arrays) != sorted(expected):
        raise AutotuneError(f"--inputs {path} holds arrays {sorted(arrays)}, the model takes {expected}")
    for spec in specs:
        array = arrays[spec.name]
        if not fits(spec, array):
            takes = spec.range_text() if spec.ranges else "x".join(map(str, spec.shape))
            raise AutotuneError(f"--inputs {path}: array {spec.name!r} is {array.dtype}{list(array.shape)}, "
                                f"the model takes {spec.dtype}[{takes}]")
        spec.check_indices(array, f"--inputs {path}: array")
    return arrays


def fits(spec: TensorSpec, array: np.ndarray) -> bool:
    """The array has the spec's dtype and a shape it takes (any within its ranges)."""
    ranges = spec.ranges or tuple((d, d) for d in spec.shape)
    return (str(array.dtype) == spec.dtype and array.ndim == len(ranges)
            and all(lo <= n <= hi for n, (lo, hi) in zip(array.shape, ranges)))
