// simt shim of <cuda_runtime.h>.
#pragma once

#include "cuda_runtime_api.h"
