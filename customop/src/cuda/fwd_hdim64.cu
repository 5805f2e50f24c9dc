// Tensor-core forward kernel instantiations for head dims up to 64 (fp16, bf16).
#include "fwd_launch.cuh"

namespace ortflash::cuda {

template std::string launch_flash_fwd<FwdTraitsFor<__half, 64, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__nv_bfloat16, 64, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__half, 64, false>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__nv_bfloat16, 64, false>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__half, 64, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__nv_bfloat16, 64, true>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__half, 64, false>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__nv_bfloat16, 64, false>>(const FwdParams&, cudaStream_t);
// The masks-in-accumulator variants: bias (1), keep (2), both (3).
template std::string launch_flash_fwd<FwdTraitsFor<__half, 64, false, 1>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__half, 64, false, 1>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__nv_bfloat16, 64, false, 1>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__nv_bfloat16, 64, false, 1>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__half, 64, false, 2>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__half, 64, false, 2>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__nv_bfloat16, 64, false, 2>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__nv_bfloat16, 64, false, 2>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__half, 64, false, 3>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__half, 64, false, 3>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<FwdTraitsFor<__nv_bfloat16, 64, false, 3>>(const FwdParams&, cudaStream_t);
template std::string launch_flash_fwd<DecodeTraitsFor<__nv_bfloat16, 64, false, 3>>(const FwdParams&, cudaStream_t);

}  // namespace ortflash::cuda
