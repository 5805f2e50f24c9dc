// Tensor-core forward kernel instantiations for float32 (3xTF32), head-dim capacities 64 and 128.
#include "fwd_launch.cuh"

namespace ortflash::cuda {

template std::string launch_flash_fwd<Float32TraitsFor<64, false>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<64, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<128, false>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<128, true>>(const FwdParams&, cudaStream_t);
// K and V split into tf32 parts once per block.
template std::string launch_flash_fwd<Float32TraitsFor<64, false, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<64, true, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<128, false, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<Float32TraitsFor<128, true, true>>(const FwdParams&, cudaStream_t);

}  // namespace ortflash::cuda
