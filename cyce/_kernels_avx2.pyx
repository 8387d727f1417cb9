# The avx2 build of cyce's kernels; the code is in the .pxi files.
include "_kernels.pxi"
include "_binary.pxi"
