// simt — host side of a kernel launch (what `kernel<<<grid, block, smem, stream>>>(args)` becomes
// under the emulator; customop/src/cuda/cuda_compat.cuh spells launches as ORTFLASH_LAUNCH).
#pragma once

#include <cstddef>
#include <functional>
#include <tuple>
#include <utility>

namespace simt {

// Runs every block of the grid before returning. `launcher` names the launching function in
// failure messages. Returns a launch configuration error; a failure inside the kernel is reported
// by the next cudaStreamSynchronize / cudaGetLastError of the calling thread.
cudaError_t launch_erased(const char* launcher, const void* entry, dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                          cudaStream_t stream, std::function<void()> body);

template <class... Params, class... Args>
cudaError_t launch(const char* launcher, void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                   cudaStream_t stream, Args&&... args) {
  // Kernel parameters are copied by value, as a launch copies them to the device.
  auto params = std::make_tuple(static_cast<std::decay_t<Params>>(std::forward<Args>(args))...);
  return launch_erased(launcher, reinterpret_cast<const void*>(kernel), grid, block, dynamic_smem_bytes, stream,
                       [kernel, params]() { std::apply(kernel, params); });
}

}  // namespace simt
