// Tensor-core forward kernel instantiations for head dims up to 32 (fp16, bf16); the general variant
// only (see has_plain_variant in fwd_launch.h).
#include "fwd_launch.cuh"

namespace ortflash::cuda {

template std::string launch_flash_fwd<FwdTraitsFor<__half, 32, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__nv_bfloat16, 32, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__half, 32, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__nv_bfloat16, 32, true>>(const FwdParams&, cudaStream_t);

}  // namespace ortflash::cuda
