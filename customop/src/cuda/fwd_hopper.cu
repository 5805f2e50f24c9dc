// The Hopper (wgmma) forward kernel's launches and instantiations (fp16, bf16 x head dims 64, 128). Built
// only for sm_90a (nvcc >= 12.3; see cuda.cmake) and on the emulator.
#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>
#include <string>

#include "fwd_launch.cuh"
#include "hopper_kernel.cuh"

namespace ortflash::cuda {

template <class Tr>
inline DynamicSmemLimit hopper_fwd_smem_limit;

template <class Tr>
std::string launch_hopper_fwd(const FwdParams& p, cudaStream_t stream) {
  const int64_t m_blocks = (p.q_len + Tr::kBlockM - 1) / Tr::kBlockM;
  const int64_t blocks = m_blocks * p.num_splits * p.q_heads * p.batch;
  if (blocks > INT_MAX) return "hopper_fwd_kernel: " + std::to_string(blocks) + " thread blocks exceed the grid limit";
  auto kernel = &hopper_fwd_kernel<Tr>;
  if (auto error = hopper_fwd_smem_limit<Tr>.allow(kernel, Tr::kSmemBytes, "hopper_fwd_kernel"); !error.empty()) return error;
  ORTFLASH_LAUNCH(kernel, static_cast<unsigned>(blocks), Tr::kThreads, Tr::kSmemBytes, stream, p);
  return check_launch("hopper_fwd_kernel launch");
}

template std::string launch_hopper_fwd<HopperTraitsFor<__half, 64>>(const FwdParams&, cudaStream_t);
template std::string launch_hopper_fwd<HopperTraitsFor<__nv_bfloat16, 64>>(const FwdParams&, cudaStream_t);
template std::string launch_hopper_fwd<HopperTraitsFor<__half, 128>>(const FwdParams&, cudaStream_t);
template std::string launch_hopper_fwd<HopperTraitsFor<__nv_bfloat16, 128>>(const FwdParams&, cudaStream_t);

bool hopper_fwd_available() {
  cudaFuncAttributes attributes;
  const cudaError_t status = cudaFuncGetAttributes(&attributes, &hopper_fwd_kernel<HopperTraitsFor<__half, 128>>);
  if (status != cudaSuccess) (void)cudaGetLastError();  // no sm_90a image for this device: not an error of any call
  return status == cudaSuccess;
}

}  // namespace ortflash::cuda
