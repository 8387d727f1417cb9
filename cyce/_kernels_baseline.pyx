# The baseline build of cyce's kernels; the code is in _kernels.pxi.
include "_kernels.pxi"
