// Generic forward kernel and split-combine instantiations (fp32, fp16, bf16).
#include "fwd_launch.cuh"

namespace ortflash::cuda {

template std::string launch_generic_fwd<float>(const FwdParams&, cudaStream_t);
template std::string launch_generic_fwd<__half>(const FwdParams&, cudaStream_t);
template std::string launch_generic_fwd<__nv_bfloat16>(const FwdParams&, cudaStream_t);
template std::string launch_combine_splits<float>(const FwdParams&, cudaStream_t);
template std::string launch_combine_splits<__half>(const FwdParams&, cudaStream_t);
template std::string launch_combine_splits<__nv_bfloat16>(const FwdParams&, cudaStream_t);

}  // namespace ortflash::cuda
