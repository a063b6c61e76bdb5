"""NumPy and Python values to Arrow and back through the buffers: the same arrays pyarrow's own
conversion makes (values, nulls, slices, Unicode), without importing pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from polyv_connector.arrowconv import column, from_numpy, null_string, repeat, scalar, strings, to_numpy


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint64, np.float32, np.float64, np.bool_])
def test_from_numpy_and_back_equal_pyarrows_conversion(dtype: type) -> None:
    values = (np.arange(-5, 20) % 3 == 0) if dtype is np.bool_ else np.arange(25).astype(dtype)
    arr = from_numpy(values)
    assert arr.equals(pa.array(values))
    assert np.array_equal(to_numpy(arr), values)
    assert np.array_equal(to_numpy(arr.slice(3, 11)), values[3:14])  # an offset into the buffer
    assert np.array_equal(to_numpy(pa.chunked_array([arr, arr.slice(7)])), np.concatenate([values, values[7:]]))


def test_nulls_masks_and_python_values() -> None:
    mask = np.array([False, True, False])
    assert from_numpy(np.array([1, 2, 3]), mask=mask).to_pylist() == [1, None, 3]
    assert from_numpy(np.array([1, 2, 3], np.int32), pa.int64()).type == pa.int64()
    assert column(["a", None, 'é值\n"', ""], pa.string()).to_pylist() == ["a", None, 'é值\n"', ""]
    assert column([1, None], pa.int64()).to_pylist() == [1, None]
    assert column([0.5, None], pa.float64()).to_pylist() == [0.5, None]
    assert strings([]).to_pylist() == [] and strings(["x"]).type == pa.string()
    assert to_numpy(pa.array([1, None, 3])).tolist()[0] == 1  # nulls: pyarrow's own conversion
    assert repeat("r", 3, pa.string()).to_pylist() == ["r"] * 3
    assert repeat(None, 2, pa.int64()).to_pylist() == [None, None]
    assert (scalar("").as_py(), scalar(b"\0").as_py(), scalar(True).as_py(), scalar(7).as_py()) == ("", b"\0", True, 7)
    assert scalar(1.5).as_py() == 1.5 and null_string().as_py() is None and null_string().type == pa.string()


def test_none_of_it_imports_pandas() -> None:
    code = """
import sys, numpy as np, pyarrow as pa, pyarrow.compute as pc
from polyv_connector.arrowconv import column, from_numpy, scalar, strings, to_numpy
a = from_numpy(np.arange(10))
to_numpy(pc.greater(a, scalar(4)))
column(["a", None], pa.string()); strings(["b"]); to_numpy(a)
print("pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
