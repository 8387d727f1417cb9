# The avx512 build of cyce's kernels; the code is in the .pxi files.
include "_kernels.pxi"
include "_binary.pxi"
