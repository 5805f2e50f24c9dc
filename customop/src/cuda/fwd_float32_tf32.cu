// Tensor-core forward kernel instantiations for float32 in one TF32 pass (ortflash.cuda.float32_tensor_cores = 3),
// head-dim capacities 64 and 128: a unit of their own, compiled beside fwd_float32.cu's 3xTF32 ones.
#include "fwd_launch.cuh"

namespace ortflash::cuda {

template std::string launch_flash_fwd<Float32TraitsFor<64, false, false, 1>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<64, true, false, 1>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<128, false, false, 1>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<128, true, false, 1>>(const FwdParams&, cudaStream_t);

}  // namespace ortflash::cuda
