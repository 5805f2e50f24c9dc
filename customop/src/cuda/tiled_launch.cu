// Tiled SIMT forward kernel instantiations (fp32, fp16, bf16; head dim capacities 64 and 128; the
// key tiles for 99+ KiB of shared memory per block and the smaller ones for 64 KiB).
#include "fwd_launch.cuh"

namespace ortflash::cuda {

template std::string launch_tiled_fwd<TiledTraitsFor<float, 64, false>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<float, 64, true>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<float, 128, false>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<float, 128, true>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__half, 64, false>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__half, 64, true>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__half, 128, false>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__half, 128, true>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__nv_bfloat16, 64, false>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__nv_bfloat16, 64, true>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__nv_bfloat16, 128, false>>(const FwdParams&, cudaStream_t);
template std::string launch_tiled_fwd<TiledTraitsFor<__nv_bfloat16, 128, true>>(const FwdParams&, cudaStream_t);

}  // namespace ortflash::cuda
