"""A stand-in for the onnxruntime Python package over ONNX Runtime's C API (ctypes), for checking
ort_cuda_check.py where there is a libonnxruntime.so (the NuGet package's) but no onnxruntime module.

    ort = ort_capi.load("path/to/libonnxruntime.so")        # header: the package's build/native/include
    options = ort.SessionOptions(); options.register_custom_ops_library("libortflash.so")
    session = ort.InferenceSession(model_bytes_or_path, sess_options=options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"Q": q, ...})

Only what ort_cuda_check.py and ort_attention_bench.py use: the CPU provider and, with the GPU package's
library (its libonnxruntime_providers_cuda.so next to it, CUDA 13 and cuDNN 9 on the library path), the CUDA
provider with string options, e.g. providers=[("CUDAExecutionProvider", {"device_id": "0"})]. session.run takes
and returns numpy arrays in CPU memory (ONNX Runtime copies them); session.bind takes buffers already in place,
on the CPU or on a CUDA device, inputs and preallocated outputs, for timing runs without copies (what the
onnxruntime module's IOBinding does). The OrtApi function table is read by position,
so the positions are counted from the members of `struct OrtApi` in the onnxruntime_c_api.h that came with
the library (its members are only ever appended, release after release).
"""

import ctypes
import os
import re

import numpy as np

# ONNXTensorElementDataType <-> numpy
ELEMENT_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
                 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
NUMPY_TYPES = {np.dtype(v): k for k, v in ELEMENT_TYPES.items()}
CPU_EP = "CPUExecutionProvider"

_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)
_SIZE = ctypes.c_size_t
# Name -> argument types (every function returns OrtStatus*, except where _RESULTS says otherwise).
_SIGNATURES = {
    "CreateEnv": [ctypes.c_int, ctypes.c_char_p, _PP],
    "GetErrorMessage": [_P],
    "ReleaseStatus": [_P],
    "CreateSessionOptions": [_PP],
    "SetSessionLogSeverityLevel": [_P, ctypes.c_int],
    "RegisterCustomOpsLibrary_V2": [_P, ctypes.c_char_p],
    "EnableProfiling": [_P, ctypes.c_char_p],
    "AddSessionConfigEntry": [_P, ctypes.c_char_p, ctypes.c_char_p],
    "CreateSession": [_P, ctypes.c_char_p, _P, _PP],
    "CreateSessionFromArray": [_P, ctypes.c_char_p, _SIZE, _P, _PP],
    "SessionGetInputCount": [_P, ctypes.POINTER(_SIZE)],
    "SessionGetOutputCount": [_P, ctypes.POINTER(_SIZE)],
    "SessionGetInputName": [_P, _SIZE, _P, ctypes.POINTER(ctypes.c_char_p)],
    "SessionGetOutputName": [_P, _SIZE, _P, ctypes.POINTER(ctypes.c_char_p)],
    "SessionEndProfiling": [_P, _P, ctypes.POINTER(ctypes.c_char_p)],
    "GetAllocatorWithDefaultOptions": [_PP],
    "AllocatorFree": [_P, _P],
    "CreateCpuMemoryInfo": [ctypes.c_int, ctypes.c_int, _PP],
    "CreateMemoryInfo": [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, _PP],
    "CreateTensorWithDataAsOrtValue": [_P, _P, _SIZE, ctypes.POINTER(ctypes.c_int64), _SIZE, ctypes.c_int, _PP],
    "Run": [_P, _P, ctypes.POINTER(ctypes.c_char_p), _PP, _SIZE, ctypes.POINTER(ctypes.c_char_p), _SIZE, _PP],
    "GetTensorTypeAndShape": [_P, _PP],
    "GetTensorElementType": [_P, ctypes.POINTER(ctypes.c_int)],
    "GetDimensionsCount": [_P, ctypes.POINTER(_SIZE)],
    "GetDimensions": [_P, ctypes.POINTER(ctypes.c_int64), _SIZE],
    "GetTensorMutableData": [_P, _PP],
    "GetAvailableProviders": [ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)), ctypes.POINTER(ctypes.c_int)],
    "ReleaseAvailableProviders": [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int],
    "ReleaseEnv": [_P], "ReleaseSessionOptions": [_P], "ReleaseSession": [_P], "ReleaseValue": [_P],
    "ReleaseMemoryInfo": [_P], "ReleaseTensorTypeAndShapeInfo": [_P],
    "CreateCUDAProviderOptions": [_PP],
    "UpdateCUDAProviderOptions": [_P, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p), _SIZE],
    "SessionOptionsAppendExecutionProvider_CUDA_V2": [_P, _P],
    "ReleaseCUDAProviderOptions": [_P],
}
_RESULTS = {"GetErrorMessage": ctypes.c_char_p, "ReleaseStatus": None, "ReleaseEnv": None,
            "ReleaseSessionOptions": None, "ReleaseSession": None, "ReleaseValue": None, "ReleaseMemoryInfo": None,
            "ReleaseTensorTypeAndShapeInfo": None, "ReleaseCUDAProviderOptions": None}
CUDA_EP = "CUDAExecutionProvider"


def api_members(header_text):
    """Names of the members of struct OrtApi, in order."""
    start = header_text.index("struct OrtApi {")
    body = header_text[start + len("struct OrtApi {"):]
    depth, end = 1, 0
    for end, char in enumerate(body):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            break
    body = re.sub(r"/\*.*?\*/", " ", body[:end], flags=re.S)
    body = re.sub(r"//[^\n]*", " ", body)
    body = "\n".join(line for line in body.splitlines() if not line.strip().startswith("#"))
    names = []
    for member in body.split(";"):
        member = " ".join(member.split())
        if not member:
            continue
        match = (re.match(r"ORT_API2_STATUS\(\s*(\w+)", member) or re.match(r"ORT_API_STATUS\(\s*(\w+)", member)
                 or re.match(r"ORT_API_T\([^,]+,\s*(\w+)", member))
        if match:
            names.append(match.group(1))
            continue
        match = re.match(r"ORT_CLASS_RELEASE2?\(\s*(\w+)\s*\)", member)
        if match:
            names.append("Release" + match.group(1))
            continue
        match = re.search(r"\(\s*ORT_API_CALL\s*\*\s*(\w+)\s*\)", member)
        if match:
            names.append(match.group(1))
            continue
        raise ValueError(f"cannot read a member of struct OrtApi: {member[:120]}")
    return names


class OrtError(RuntimeError):
    pass


def load(library, header=None):
    """The stand-in module for this libonnxruntime.so."""
    if header is None:
        # The NuGet layout (runtimes/linux-x64/native/lib -> build/native/include/header), else include/ beside the
        # library's folder (prepare_ort_models.sh's .ort-gpu) or in it (what ort_gpu_chunks.sh unpacks).
        here = os.path.dirname(os.path.abspath(library))
        root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
        candidates = [os.path.join(root, "build", "native", "include", "onnxruntime_c_api.h"),
                      os.path.join(os.path.dirname(here), "include", "onnxruntime_c_api.h"),
                      os.path.join(here, "include", "onnxruntime_c_api.h")]
        header = next((c for c in candidates if os.path.isfile(c)), candidates[0])
    with open(header) as f:
        text = f.read()
    version = int(re.search(r"#define ORT_API_VERSION (\d+)", text).group(1))
    members = api_members(text)
    lib = ctypes.CDLL(library)

    class ApiBase(ctypes.Structure):
        _fields_ = [("GetApi", ctypes.CFUNCTYPE(_P, ctypes.c_uint32)),
                    ("GetVersionString", ctypes.CFUNCTYPE(ctypes.c_char_p))]

    lib.OrtGetApiBase.restype = ctypes.POINTER(ApiBase)
    base = lib.OrtGetApiBase().contents
    table = base.GetApi(version)
    if not table:
        raise OrtError(f"{library} does not provide C API version {version}")
    pointers = ctypes.cast(table, ctypes.POINTER(_P * len(members))).contents
    api = {}
    for name, argtypes in _SIGNATURES.items():
        index = members.index(name)
        prototype = ctypes.CFUNCTYPE(_RESULTS.get(name, _P), *argtypes)
        api[name] = prototype(pointers[index])
    return _Module(api, base.GetVersionString().decode())


class _Module:
    """What `import onnxruntime` gives, as far as ort_cuda_check.py uses it."""

    def __init__(self, api, version):
        self._api = api
        self.__version__ = version + "+capi"  # the C API stand-in
        env = _P()
        self._check(api["CreateEnv"](3, b"ort_capi", ctypes.byref(env)))
        self._env = env
        allocator = _P()
        self._check(api["GetAllocatorWithDefaultOptions"](ctypes.byref(allocator)))
        self._allocator = allocator
        memory = _P()
        self._check(api["CreateCpuMemoryInfo"](1, 0, ctypes.byref(memory)))  # OrtArenaAllocator, OrtMemTypeDefault
        self._memory = memory
        module = self

        class SessionOptions:
            def __init__(self):
                handle = _P()
                module._check(module._api["CreateSessionOptions"](ctypes.byref(handle)))
                self._handle = handle
                self._log_level = 2
                self.enable_profiling = False
                self.profile_file_prefix = "onnxruntime_profile_"

            def __del__(self):
                module._api["ReleaseSessionOptions"](self._handle)

            @property
            def log_severity_level(self):
                return self._log_level

            @log_severity_level.setter
            def log_severity_level(self, level):
                self._log_level = level
                module._check(module._api["SetSessionLogSeverityLevel"](self._handle, level))

            def register_custom_ops_library(self, path):
                module._check(module._api["RegisterCustomOpsLibrary_V2"](self._handle, os.fsencode(path)))

            def add_session_config_entry(self, key, value):
                module._check(module._api["AddSessionConfigEntry"](self._handle, key.encode(), value.encode()))

        self.SessionOptions = SessionOptions
        self.InferenceSession = lambda model, sess_options=None, providers=None: _Session(
            module, model, sess_options or SessionOptions(), providers)

    def _check(self, status):
        if status:
            message = self._api["GetErrorMessage"](status).decode(errors="replace")
            self._api["ReleaseStatus"](status)
            raise OrtError(message)

    def get_available_providers(self):
        names = ctypes.POINTER(ctypes.c_char_p)()
        count = ctypes.c_int()
        self._check(self._api["GetAvailableProviders"](ctypes.byref(names), ctypes.byref(count)))
        try:
            return [names[i].decode() for i in range(count.value)]
        finally:
            self._check(self._api["ReleaseAvailableProviders"](names, count))

    def _string(self, pointer):
        text = pointer.value.decode()
        self._check(self._api["AllocatorFree"](self._allocator, ctypes.cast(pointer, _P)))
        return text


class _Named:
    def __init__(self, name):
        self.name = name


class _Session:
    def __init__(self, module, model, options, providers):
        self._module, self._api = module, module._api
        entries = [p if isinstance(p, tuple) else (p, {}) for p in (providers or [CPU_EP])]
        unknown = [name for name, _ in entries if name not in (CPU_EP, CUDA_EP)]
        if unknown:
            raise OrtError(f"the C API stand-in runs the CPU and CUDA providers only, not {', '.join(unknown)}")
        for name, provider_options in entries:  # the CPU provider is always there, last
            if name == CUDA_EP:
                self._append_cuda(options, provider_options)
        self._providers = [name for name, _ in entries] + ([CPU_EP] if all(n != CPU_EP for n, _ in entries) else [])
        if options.enable_profiling:
            module._check(self._api["EnableProfiling"](options._handle, os.fsencode(options.profile_file_prefix)))
        handle = _P()
        if isinstance(model, (bytes, bytearray)):
            module._check(self._api["CreateSessionFromArray"](module._env, bytes(model), len(model), options._handle,
                                                              ctypes.byref(handle)))
        else:
            module._check(self._api["CreateSession"](module._env, os.fsencode(model), options._handle,
                                                     ctypes.byref(handle)))
        self._handle = handle
        self._inputs = self._names("SessionGetInputCount", "SessionGetInputName")
        self._outputs = self._names("SessionGetOutputCount", "SessionGetOutputName")

    def __del__(self):
        if getattr(self, "_handle", None):
            self._api["ReleaseSession"](self._handle)

    def _names(self, count_function, name_function):
        count = _SIZE()
        self._module._check(self._api[count_function](self._handle, ctypes.byref(count)))
        names = []
        for i in range(count.value):
            name = ctypes.c_char_p()
            self._module._check(self._api[name_function](self._handle, i, self._module._allocator, ctypes.byref(name)))
            names.append(self._module._string(name))
        return names

    def _append_cuda(self, options, provider_options):
        cuda = _P()
        self._module._check(self._api["CreateCUDAProviderOptions"](ctypes.byref(cuda)))
        try:
            if provider_options:
                keys = (ctypes.c_char_p * len(provider_options))(*(str(k).encode() for k in provider_options))
                values = (ctypes.c_char_p * len(provider_options))(*(str(v).encode() for v in provider_options.values()))
                self._module._check(self._api["UpdateCUDAProviderOptions"](cuda, keys, values, len(provider_options)))
            self._module._check(self._api["SessionOptionsAppendExecutionProvider_CUDA_V2"](options._handle, cuda))
        finally:
            self._api["ReleaseCUDAProviderOptions"](cuda)

    def get_providers(self):
        """The providers the session was given, in order (the C API cannot list those a session took; one it
        could not append is an error at creation)."""
        return list(self._providers)

    def get_inputs(self):
        return [_Named(n) for n in self._inputs]

    def get_outputs(self):
        return [_Named(n) for n in self._outputs]

    def run(self, output_names, feeds):
        module, api = self._module, self._api
        output_names = list(output_names or self._outputs)
        keep_alive, values = [], []
        try:
            for name in feeds:
                array = np.ascontiguousarray(feeds[name])
                if array.dtype not in NUMPY_TYPES:
                    raise OrtError(f"input '{name}': numpy type {array.dtype} is not supported by the stand-in")
                keep_alive.append(array)
                shape = (ctypes.c_int64 * max(1, array.ndim))(*array.shape)
                value = _P()
                module._check(api["CreateTensorWithDataAsOrtValue"](
                    module._memory, array.ctypes.data_as(_P), array.nbytes, shape, array.ndim,
                    NUMPY_TYPES[array.dtype], ctypes.byref(value)))
                values.append(value)
            input_names = (ctypes.c_char_p * max(1, len(values)))(*[n.encode() for n in feeds])
            inputs = (_P * max(1, len(values)))(*values)
            names = (ctypes.c_char_p * len(output_names))(*[n.encode() for n in output_names])
            outputs = (_P * len(output_names))()
            module._check(api["Run"](self._handle, None, input_names, inputs, len(values), names, len(output_names),
                                     outputs))
            return [self._to_numpy(_P(outputs[i])) for i in range(len(output_names))]
        finally:
            for value in values:
                api["ReleaseValue"](value)

    def bind(self, inputs, outputs, device="cpu", device_id=0):
        """A _Bound run over buffers in place: inputs and outputs map names to (address, shape, numpy dtype), in
        CPU memory (device "cpu") or CUDA device memory ("cuda"). The buffers must outlive the _Bound."""
        return _Bound(self, inputs, outputs, device, device_id)

    def _to_numpy(self, value):
        module, api = self._module, self._api
        try:
            info = _P()
            module._check(api["GetTensorTypeAndShape"](value, ctypes.byref(info)))
            try:
                element, rank = ctypes.c_int(), _SIZE()
                module._check(api["GetTensorElementType"](info, ctypes.byref(element)))
                module._check(api["GetDimensionsCount"](info, ctypes.byref(rank)))
                dims = (ctypes.c_int64 * max(1, rank.value))()
                module._check(api["GetDimensions"](info, dims, rank.value))
            finally:
                api["ReleaseTensorTypeAndShapeInfo"](info)
            if element.value not in ELEMENT_TYPES:
                raise OrtError(f"output element type {element.value} is not supported by the stand-in")
            array = np.empty([dims[i] for i in range(rank.value)], dtype=ELEMENT_TYPES[element.value])
            data = _P()
            module._check(api["GetTensorMutableData"](value, ctypes.byref(data)))
            if array.nbytes:
                ctypes.memmove(array.ctypes.data, data, array.nbytes)
            return array
        finally:
            api["ReleaseValue"](value)

    def end_profiling(self):
        path = ctypes.c_char_p()
        self._module._check(self._api["SessionEndProfiling"](self._handle, self._module._allocator,
                                                             ctypes.byref(path)))
        return self._module._string(path)


class _Bound:
    """OrtValues made once over caller-owned buffers; run() calls Run with the outputs preallocated."""

    def __init__(self, session, inputs, outputs, device, device_id):
        module, api = session._module, session._api
        self._session, self._api, self._values = session, api, []
        if device == "cpu":
            memory, self._memory = module._memory, None
        elif device == "cuda":
            memory = _P()
            module._check(api["CreateMemoryInfo"](b"Cuda", 0, int(device_id), 0, ctypes.byref(memory)))  # device allocator
            self._memory = memory
        else:
            raise OrtError(f"bind: device '{device}' is neither cpu nor cuda")
        try:
            in_values = [self._value(module, memory, name, spec) for name, spec in inputs.items()]
            out_values = [self._value(module, memory, name, spec) for name, spec in outputs.items()]
        except Exception:
            self.release()
            raise
        self._input_names = (ctypes.c_char_p * max(1, len(inputs)))(*[n.encode() for n in inputs])
        self._inputs = (_P * max(1, len(inputs)))(*in_values)
        self._output_names = (ctypes.c_char_p * len(outputs))(*[n.encode() for n in outputs])
        self._outputs = (_P * len(outputs))(*out_values)
        self._counts = (len(inputs), len(outputs))

    def _value(self, module, memory, name, spec):
        address, shape, dtype = spec
        dtype = np.dtype(dtype)
        if dtype not in NUMPY_TYPES:
            raise OrtError(f"bind: '{name}' has numpy type {dtype}, which the stand-in does not map")
        count = int(np.prod(shape, dtype=np.int64))
        dims = (ctypes.c_int64 * max(1, len(shape)))(*shape)
        value = _P()
        module._check(self._api["CreateTensorWithDataAsOrtValue"](
            memory, _P(address), count * dtype.itemsize, dims, len(shape), NUMPY_TYPES[dtype], ctypes.byref(value)))
        self._values.append(value)
        return value

    def run(self):
        self._session._module._check(self._api["Run"](
            self._session._handle, None, self._input_names, self._inputs, self._counts[0], self._output_names,
            self._counts[1], self._outputs))

    def release(self):
        for value in self._values:
            self._api["ReleaseValue"](value)
        self._values = []
        if self._memory is not None:
            self._api["ReleaseMemoryInfo"](self._memory)
            self._memory = None

    def __del__(self):
        self.release()
