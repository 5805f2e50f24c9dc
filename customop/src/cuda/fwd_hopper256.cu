// Hopper kernel instantiations for head dim 256 (fp16, bf16); sm_90a only.
#include "hopper_launch.cuh"

namespace ortflash::cuda {

// No masks at 256 (the mma.sync kernel has no masks-in-accumulator variant there to decline to).
template std::string launch_hopper_fwd<HopperTraitsFor<__half, 256>>(const FwdParams&, cudaStream_t);
template std::string launch_hopper_tma_fwd<HopperTraitsFor<__half, 256>>(const FwdParams&, cudaStream_t, bool*);
template std::string launch_hopper_fwd<HopperTraitsFor<__nv_bfloat16, 256>>(const FwdParams&, cudaStream_t);
template std::string launch_hopper_tma_fwd<HopperTraitsFor<__nv_bfloat16, 256>>(const FwdParams&, cudaStream_t, bool*);

}  // namespace ortflash::cuda
