# Tuning: tile shapes that replace the defaults of tile_shape() (customop/src/cuda/fwd_launch.h) in
# every target compiling the CUDA kernels (nvcc builds and the simt emulator alike), e.g.
#   -DORTFLASH_CUDA_TILES="128=128,64,4;64=128,128,4"      (head dim capacity=block_m,block_n,warps)
set(ORTFLASH_CUDA_TILES "" CACHE STRING
    "Tuning: tile shapes replacing the defaults, 'capacity=block_m,block_n,warps;...' (capacities 32 64 96 128 256)")

function(ortflash_apply_cuda_tiles target)
  foreach(entry IN LISTS ORTFLASH_CUDA_TILES)
    if(NOT entry MATCHES "^(32|64|96|128|256)=([0-9]+),([0-9]+),([0-9]+)$")
      message(FATAL_ERROR "ORTFLASH_CUDA_TILES: '${entry}' is not capacity=block_m,block_n,warps "
                          "with a capacity among 32 64 96 128 256")
    endif()
    # Three macros, not one "m,n,w" value: nvcc splits option values at commas.
    target_compile_definitions(${target} PRIVATE ORTFLASH_TILE_${CMAKE_MATCH_1}_M=${CMAKE_MATCH_2}
                               ORTFLASH_TILE_${CMAKE_MATCH_1}_N=${CMAKE_MATCH_3} ORTFLASH_TILE_${CMAKE_MATCH_1}_WARPS=${CMAKE_MATCH_4})
  endforeach()
endfunction()

if(ORTFLASH_CUDA_TILES)
  message(STATUS "OrtFlash: tuning tile shapes ${ORTFLASH_CUDA_TILES}")
endif()
