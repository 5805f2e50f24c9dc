// Hopper kernel instantiations for head dim 96 (fp16, bf16; tiles of 128 columns, the last 32 zeros); sm_90a only.
#include "hopper_launch.cuh"

namespace ortflash::cuda {

ORTFLASH_HOPPER_INSTANCES(__half, 96)
ORTFLASH_HOPPER_INSTANCES(__nv_bfloat16, 96)

}  // namespace ortflash::cuda
