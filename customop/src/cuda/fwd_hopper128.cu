// Hopper kernel instantiations for head dim 128 (fp16, bf16), and the check that the device runs them; sm_90a only.
#include "hopper_launch.cuh"

namespace ortflash::cuda {

ORTFLASH_HOPPER_INSTANCES(__half, 128)
ORTFLASH_HOPPER_INSTANCES(__nv_bfloat16, 128)

bool hopper_fwd_available() {
  cudaFuncAttributes attributes;
  const cudaError_t status = cudaFuncGetAttributes(&attributes, &hopper_fwd_kernel<HopperTraitsFor<__half, 128>>);
  if (status != cudaSuccess) (void)cudaGetLastError();  // no sm_90a image for this device: not an error of any call
  return status == cudaSuccess;
}

}  // namespace ortflash::cuda
