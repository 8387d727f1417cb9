"""pytest hooks of the benchmark suites: the --cyce-shapes option, the
markers, and the `case` parameter of every suite (see common.Case)."""

from . import common


def pytest_addoption(parser):
    parser.addoption(
        "--cyce-shapes", choices=("full", "smoke"), default="full",
        help="full: the benchmark shapes; smoke: the same class counts with "
             f"1/{common.SMOKE_ROW_DIVISOR} of the rows (for --benchmark-disable runs in CI)",
    )


def pytest_configure(config):
    for line in common.MARKERS:
        config.addinivalue_line("markers", line)


def pytest_generate_tests(metafunc):
    """A suite module names its FAMILY and its CONTESTANTS (name -> setup
    function), and may name HALF_CONTESTANTS (half dtype -> the contestants
    run at it); each test taking `case` runs over all of them."""
    if "case" in metafunc.fixturenames:
        size = metafunc.config.getoption("cyce_shapes")
        module = metafunc.module
        half = getattr(module, "HALF_CONTESTANTS", None)
        metafunc.parametrize("case", common.case_params(module.FAMILY, module.CONTESTANTS, size, half))
