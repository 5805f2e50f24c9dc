// Hopper kernel instantiations for head dim 64 (fp16, bf16); sm_90a only (one file per head dim: they compile in parallel).
#include "hopper_launch.cuh"

namespace ortflash::cuda {

ORTFLASH_HOPPER_INSTANCES(__half, 64)
ORTFLASH_HOPPER_INSTANCES(__nv_bfloat16, 64)

}  // namespace ortflash::cuda
