"""Project code raises no numpy/torch warnings on legal inputs (read-only arrays, all-NaN columns)."""

import subprocess
import sys
import warnings

import numpy as np


def test_read_only_vectors_are_accepted_without_a_torch_warning():
    # in a fresh process: torch shows this warning only once per process
    code = (
        "import warnings, numpy as np\n"
        "warnings.simplefilter('error')\n"
        "from nla_probe.nla.injection import check_vectors\n"
        "a = np.arange(8, dtype=np.float32).reshape(2, 4) + 1\n"
        "a.flags.writeable = False\n"
        "t = check_vectors(a, 4)\n"
        "assert t.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]], t\n"
        "t[0, 0] = 100.0\n"
        "assert a[0, 0] == 1.0  # the caller's read-only array is untouched\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_distill_mean_of_an_all_nan_column_is_nan_without_a_warning():
    from nla_probe.toy.distill import _nanmean

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(_nanmean(np.array([np.nan, np.nan])))
        assert _nanmean(np.array([1.0, np.nan, 4.0])) == 2.5
