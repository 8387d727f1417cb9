# Type stub for cyce._kernels_avx512: the AVX-512 build of the same source
# (cyce/_kernels.pxi) as cyce._kernels_baseline, so the same functions.
from cyce._kernels_baseline import *
