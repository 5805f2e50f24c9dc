// Tiled SIMT forward kernel instantiations (fp32, fp16, bf16; head dim capacities 64 and 128).
#include "fwd_launch.cuh"

namespace ortflash::cuda {

template std::string launch_tiled_fwd<TiledTraitsFor<float, 64>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<float, 128>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__half, 64>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__half, 128>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__nv_bfloat16, 64>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__nv_bfloat16, 128>>(const FwdParams&, cudaStream_t);

}  // namespace ortflash::cuda
