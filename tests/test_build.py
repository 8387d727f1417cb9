"""The build is what CI asked for."""

import os

import pytest

import cyce
from cyce._info import config


@pytest.mark.skipif(os.environ.get("CYCE_REQUIRE_OPENMP", "") in ("", "0"),
                    reason="CYCE_REQUIRE_OPENMP is not set")
def test_openmp_is_on_where_required():
    assert config()["openmp"], "built without OpenMP although CYCE_REQUIRE_OPENMP is set"
    assert config()["openmp_version"] >= 201107


def test_show_config_reports_the_build(capsys):
    cyce.show_config()
    text = capsys.readouterr().out
    for key in ("version", "compiler", "cflags", "openmp", "simd", "default_threads"):
        assert key in text
    assert "-ffast-math" not in config()["cflags"]
    assert config()["simd"] in ("baseline", "avx2", "avx512")
