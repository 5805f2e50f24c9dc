// Micro-benchmark of the CPU FlashAttention kernel on the shapes users run: GFLOP/s per shape,
// dtype and thread count, and the fraction of the machine's measured fp32 FMA peak. A benchmark,
// not a test: it asserts nothing and CTest does not run it.
//
//   ortflash_cpu_bench [--path dispatch|avx512|avx2|neon|portable] [--threads 1,2] [--dtypes f32,f16]
//                      [--filter SUBSTRING] [--seconds PER_CONFIG] [--rounds N] [--clock wall|cpu]
//                      [--batch B] [--layout bhsd|bshd]
//
// --batch B runs each shape on a batch of B sequences (default 1). Tensors of a few MB outgrow the
// caches, as a batch of short sequences through ONNX Runtime does: the kernel then waits on memory.
// --layout bshd lays Q, K, V and the output out (B, S, H, D), as exported graphs hold them before their
// Transpose (a head's rows H·D elements apart); the default is dense (B, H, S, D).
//
// --clock cpu times a call by the CPU time of the process (every thread's, while it runs) instead
// of the wall clock: on a machine shared with other work it leaves out the time the kernel's
// threads wait for a core, so comparisons of two builds come out steadier. For more than one
// thread it measures the work done, not how evenly it was split.
//
// Each round runs every selected configuration once for about --seconds and keeps the median call
// time; configurations are interleaved round by round so that a machine slowing down affects all
// alike. Reported: the best and the median round. Flops: 4·B·Hq·Sq·Skv·D (two matrix
// products), halved for causal prefill (the square case; the visible triangle is a little more).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fma_peak.h"
#include "flash_attention_cpu_internal.h"
#include "ortflash/flash_attention_cpu.h"

namespace ortflash::bench {
namespace {

// A persistent pool that hands out item indices dynamically (one at a time, as ONNX Runtime's
// TrySimpleParallelFor does); the calling thread works too.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    for (int t = 1; t < threads; ++t) workers_.emplace_back([this] { WorkerLoop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  ParallelRunner runner() {
    ParallelRunner r;
    if (!workers_.empty()) {
      r.parallel_for = &ParallelFor;
      r.self = this;
    }
    return r;
  }

 private:
  static void ParallelFor(void* self, void (*fn)(void*, size_t), size_t total, void* data) {
    auto& pool = *static_cast<ThreadPool*>(self);
    {
      std::lock_guard<std::mutex> lock(pool.mutex_);
      pool.fn_ = fn;
      pool.data_ = data;
      pool.total_ = total;
      pool.next_.store(0);
      pool.busy_ = static_cast<int>(pool.workers_.size());
      ++pool.generation_;
    }
    pool.wake_.notify_all();
    pool.Drain();
    std::unique_lock<std::mutex> lock(pool.mutex_);
    pool.done_.wait(lock, [&] { return pool.busy_ == 0; });
  }

  void Drain() {
    for (size_t i = next_.fetch_add(1); i < total_; i = next_.fetch_add(1)) fn_(data_, i);
  }

  void WorkerLoop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stopping_) return;
      }
      Drain();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busy_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  int busy_ = 0;
  void (*fn_)(void*, size_t) = nullptr;
  void* data_ = nullptr;
  size_t total_ = 0;
  std::atomic<size_t> next_{0};
};

// Exact for the values generated here (multiples of 2^-10 up to 2^14 in magnitude).
uint16_t HalfBits(float x) {
  if (x == 0.0f) return 0;
  int exponent = 0;
  const float fraction = std::frexp(std::fabs(x), &exponent);  // |x| = fraction * 2^exponent, fraction in [0.5, 1)
  const auto mantissa = static_cast<uint16_t>((2.0f * fraction - 1.0f) * 1024.0f);
  const auto biased = static_cast<uint16_t>(exponent - 1 + 15);
  return static_cast<uint16_t>((x < 0 ? 0x8000 : 0) | (biased << 10) | mantissa);
}

struct Shape {
  const char* name;
  int64_t q_heads, kv_heads, q_len, kv_len, head_dim;
  bool padding_bias;  // (B, 1, 1, Skv) bias, the last eighth of the keys -10000 (the padded encoder)
  CausalAlignment causal;
  bool expanded_bias = false;  // the padding bias stored for every query row, (B, 1, Sq, Skv), as an exporter's Expand leaves it
  bool causal_bias = false;    // a causal mask held in an (Sq, Skv) bias, -10000 above the diagonal (decoder exports)
  bool left_padding = false;   // the padding bias on the first eighth of the keys instead of the last; with
                               // causal_bias, -10000 on the first eighth of the keys in that bias, now (B, 1, Sq, Skv)
                               // (batched prompts padded on the left)
  bool position_bias = false;  // a (1, H, Sq, Skv) bias of small values (T5's relative positions, Swin's windows)
  bool outer_keep = false;     // DeBERTa's (B, 1, Sq, Skv) keep mask: the outer product of padding on the last eighth

  double Flops() const {
    const double full = 4.0 * static_cast<double>(q_heads * q_len * kv_len * head_dim);
    return (causal != CausalAlignment::kNone || causal_bias) && q_len == kv_len ? full / 2 : full;  // the useful work
  }
};

const Shape kShapes[] = {
    {"encoder T512 H12 D64", 12, 12, 512, 512, 64, true, CausalAlignment::kNone},
    {"encoder T2048 H12 D64", 12, 12, 2048, 2048, 64, true, CausalAlignment::kNone},
    {"encoder T512 H12 D64 rowbias", 12, 12, 512, 512, 64, true, CausalAlignment::kNone, true},
    {"encoder T512 H12 D64 leftpad", 12, 12, 512, 512, 64, true, CausalAlignment::kNone, false, false, true},
    {"biascausal T512 H12 D64", 12, 12, 512, 512, 64, false, CausalAlignment::kNone, false, true},
    {"biascausal T2048 H12 D64", 12, 12, 2048, 2048, 64, false, CausalAlignment::kNone, false, true},
    {"biascausal T1024 H32/8 D128", 32, 8, 1024, 1024, 128, false, CausalAlignment::kNone, false, true},
    {"biascausal T64 H12 D64 leftpad", 12, 12, 64, 64, 64, false, CausalAlignment::kNone, false, true, true},
    {"biascausal T128 H12 D64 leftpad", 12, 12, 128, 128, 64, false, CausalAlignment::kNone, false, true, true},
    {"biascausal T512 H12 D64 leftpad", 12, 12, 512, 512, 64, false, CausalAlignment::kNone, false, true, true},
    {"biascausal T2048 H12 D64 leftpad", 12, 12, 2048, 2048, 64, false, CausalAlignment::kNone, false, true, true},
    {"encoder T512 H12 D64 rowbias leftpad", 12, 12, 512, 512, 64, true, CausalAlignment::kNone, true, false, true},
    {"biascausal T64 H32 D128", 32, 32, 64, 64, 128, false, CausalAlignment::kNone, false, true},
    {"posbias T128 H12 D64", 12, 12, 128, 128, 64, false, CausalAlignment::kNone, false, false, false, true},
    {"posbias T49 H4 D32", 4, 4, 49, 49, 32, false, CausalAlignment::kNone, false, false, false, true},
    {"posbias T16 H8 D64", 8, 8, 16, 16, 64, false, CausalAlignment::kNone, false, false, false, true},
    {"deberta T512 H12 D64", 12, 12, 512, 512, 64, false, CausalAlignment::kNone, false, false, false, true, true},
    {"causal T1024 H32 D128", 32, 32, 1024, 1024, 128, false, CausalAlignment::kUpperLeft},
    {"causal T1024 H32/8 D128", 32, 8, 1024, 1024, 128, false, CausalAlignment::kUpperLeft},
    {"causal T512 H12 D64", 12, 12, 512, 512, 64, false, CausalAlignment::kUpperLeft},
    {"causal T2048 H12 D64", 12, 12, 2048, 2048, 64, false, CausalAlignment::kUpperLeft},
    {"decode T2048 H32/8 D128", 32, 8, 1, 2048, 128, false, CausalAlignment::kLowerRight},
    {"short T4 H32 D128", 32, 32, 4, 4, 128, false, CausalAlignment::kNone},
    {"short T8 H12 D64", 12, 12, 8, 8, 64, false, CausalAlignment::kNone},
    {"short T8 H32 D128", 32, 32, 8, 8, 128, false, CausalAlignment::kNone},
    {"short T12 H32 D128", 32, 32, 12, 12, 128, false, CausalAlignment::kNone},
    {"short T16 H12 D64", 12, 12, 16, 16, 64, false, CausalAlignment::kNone},
    {"short T16 H32 D128", 32, 32, 16, 16, 128, false, CausalAlignment::kNone},
    {"short T24 H32 D128", 32, 32, 24, 24, 128, false, CausalAlignment::kNone},
    {"short T33 H12 D64", 12, 12, 33, 33, 64, false, CausalAlignment::kNone},
    {"short T33 H32 D128", 32, 32, 33, 33, 128, false, CausalAlignment::kNone},
    {"short T36 H32 D128", 32, 32, 36, 36, 128, false, CausalAlignment::kNone},
    {"short T40 H32 D128", 32, 32, 40, 40, 128, false, CausalAlignment::kNone},
    {"short T48 H32 D128", 32, 32, 48, 48, 128, false, CausalAlignment::kNone},
    {"short T77 H12 D64", 12, 12, 77, 77, 64, false, CausalAlignment::kNone},
    {"short T197 H12 D64", 12, 12, 197, 197, 64, false, CausalAlignment::kNone},
    {"short causal T65 H32 D128", 32, 32, 65, 65, 128, false, CausalAlignment::kUpperLeft},
    {"decode T511 H32 D128", 32, 32, 1, 511, 128, false, CausalAlignment::kLowerRight},
    {"decode T2048 H32 D128", 32, 32, 1, 2048, 128, false, CausalAlignment::kLowerRight},
    {"decode T511 H12 D64", 12, 12, 1, 511, 64, false, CausalAlignment::kLowerRight},
    {"decode T2048 H12 D64", 12, 12, 1, 2048, 64, false, CausalAlignment::kLowerRight},
    {"decode T2048 H12 D64 leftpad", 12, 12, 1, 2048, 64, true, CausalAlignment::kLowerRight, false, false, true},
};

// Bytes on a 64-byte boundary, as ONNX Runtime's CPU allocator hands out tensors.
class TensorBytes {
 public:
  void resize(size_t size) {
    storage_.assign(size + 64, 0);
    size_ = size;
  }
  uint8_t* data() {
    const auto address = reinterpret_cast<uintptr_t>(storage_.data());
    return storage_.data() + (64 - address % 64) % 64;
  }
  size_t size() const { return size_; }

 private:
  std::vector<uint8_t> storage_;
  size_t size_ = 0;
};

// One shape's tensors in one dtype, densely packed BHSD.
struct Tensors {
  TensorBytes q, k, v, out, bias, keep;
  AttentionParams params;

  Tensors(const Shape& shape, DType dtype, int64_t batch, bool seq_major, std::mt19937& rng) {
    const size_t element = dtype == DType::kFloat32 ? 4 : 2;
    params.dtype = dtype;
    params.batch = batch;
    params.q_heads = shape.q_heads;
    params.kv_heads = shape.kv_heads;
    params.q_len = shape.q_len;
    params.kv_len = shape.kv_len;
    params.head_dim = params.v_head_dim = shape.head_dim;
    params.scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
    params.causal = shape.causal;
    SetDenseStrides(params);
    if (seq_major) {
      const auto seq_major_strides = [](int64_t* stride, int64_t heads, int64_t len, int64_t dim) {
        stride[0] = len * heads * dim;
        stride[1] = dim;
        stride[2] = heads * dim;
      };
      seq_major_strides(params.q_stride, shape.q_heads, shape.q_len, shape.head_dim);
      seq_major_strides(params.k_stride, shape.kv_heads, shape.kv_len, shape.head_dim);
      seq_major_strides(params.v_stride, shape.kv_heads, shape.kv_len, shape.head_dim);
      seq_major_strides(params.out_stride, shape.q_heads, shape.q_len, shape.head_dim);
    }
    std::uniform_int_distribution<int> uniform(-1024, 1024);
    const auto fill = [&](TensorBytes& bytes, int64_t count, const std::function<float(int64_t)>& value) {
      bytes.resize(static_cast<size_t>(count) * element);
      for (int64_t i = 0; i < count; ++i) {
        const float x = value(i);
        if (element == 4) {
          std::memcpy(bytes.data() + i * 4, &x, 4);
        } else {
          const uint16_t h = HalfBits(x);
          std::memcpy(bytes.data() + i * 2, &h, 2);
        }
      }
    };
    const auto random = [&](int64_t) { return static_cast<float>(uniform(rng)) / 1024.0f; };
    fill(q, batch * shape.q_heads * shape.q_len * shape.head_dim, random);
    fill(k, batch * shape.kv_heads * shape.kv_len * shape.head_dim, random);
    fill(v, batch * shape.kv_heads * shape.kv_len * shape.head_dim, random);
    out.resize(static_cast<size_t>(batch * shape.q_heads * shape.q_len * shape.head_dim) * element);
    if (shape.padding_bias) {
      const int64_t padded_from = shape.kv_len * 7 / 8;
      const int64_t rows = shape.expanded_bias ? shape.q_len : 1;
      const int64_t left_until = shape.kv_len / 8;
      fill(bias, batch * rows * shape.kv_len, [&](int64_t j) {
        const bool padded = shape.left_padding ? j % shape.kv_len < left_until : j % shape.kv_len >= padded_from;
        return padded ? -10000.0f : 0.0f;
      });
      params.bias = bias.data();
      params.bias_stride[0] = rows * shape.kv_len;
      params.bias_stride[2] = shape.expanded_bias ? shape.kv_len : 0;
      params.bias_stride[3] = 1;
    }
    if (shape.causal_bias) {
      const int64_t rows = shape.left_padding ? batch * shape.q_len : shape.q_len;
      fill(bias, rows * shape.kv_len, [&](int64_t index) {
        const int64_t i = index / shape.kv_len % shape.q_len, j = index % shape.kv_len;
        return j > i || (shape.left_padding && j < shape.kv_len / 8) ? -10000.0f : 0.0f;
      });
      params.bias = bias.data();
      params.bias_stride[0] = shape.left_padding ? shape.q_len * shape.kv_len : 0;
      params.bias_stride[2] = shape.kv_len;
      params.bias_stride[3] = 1;
    }
    if (shape.position_bias) {
      fill(bias, shape.q_heads * shape.q_len * shape.kv_len, [&](int64_t) { return random(0) * 4.0f; });
      params.bias = bias.data();
      params.bias_stride[1] = shape.q_len * shape.kv_len;
      params.bias_stride[2] = shape.kv_len;
      params.bias_stride[3] = 1;
    }
    if (shape.outer_keep) {
      const int64_t real = shape.q_len * 7 / 8;
      keep.resize(static_cast<size_t>(batch * shape.q_len * shape.kv_len));
      for (int64_t i = 0; i < batch * shape.q_len * shape.kv_len; ++i) {
        keep.data()[i] = i / shape.kv_len % shape.q_len < real && i % shape.kv_len < real;
      }
      params.keep = reinterpret_cast<const bool*>(keep.data());
      params.keep_stride[0] = shape.q_len * shape.kv_len;
      params.keep_stride[2] = shape.kv_len;
      params.keep_stride[3] = 1;
      params.masked_rows = MaskedRows::kZero;
    }
    params.q = q.data();
    params.k = k.data();
    params.v = v.data();
    params.out = out.data();
  }
};

using Entry = std::string (*)(const AttentionParams&, const ParallelRunner&);

Entry EntryFor(const std::string& path) {
  if (path == "avx512") return &flash_attention_cpu_avx512;
  if (path == "avx2") return &flash_attention_cpu_avx2;
  if (path == "neon") return &flash_attention_cpu_neon;
  if (path == "portable") return &flash_attention_cpu_portable;
  return &flash_attention_cpu;
}

struct Config {
  const Shape* shape;
  const Tensors* tensors;
  DType dtype;
  int threads;
  std::vector<double> round_ms;  // median call time of each round
};

// Milliseconds on the wall clock, or of CPU time used by the process.
double NowMs(bool cpu_clock) {
  if (!cpu_clock) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e3 + static_cast<double>(now.tv_nsec) * 1e-6;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

std::vector<std::string> Split(const std::string& list) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const size_t end = comma == std::string::npos ? list.size() : comma;
    if (end > start) items.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return items;
}

int Main(int argc, char** argv) {
  std::string path = "dispatch", filter, thread_list = "1,2", dtype_list = "f32,f16";
  double seconds = 0.4;
  bool cpu_clock = false;
  int rounds = 5;
  int64_t batch = 1;
  std::string layout = "bhsd";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--path") path = value;
    else if (flag == "--threads") thread_list = value;
    else if (flag == "--dtypes") dtype_list = value;
    else if (flag == "--filter") filter = value;
    else if (flag == "--seconds") seconds = std::atof(value.c_str());
    else if (flag == "--rounds") rounds = std::atoi(value.c_str());
    else if (flag == "--clock") cpu_clock = value == "cpu";
    else if (flag == "--batch") batch = std::atoll(value.c_str());
    else if (flag == "--layout") layout = value;
    else {
      std::fprintf(stderr, "unknown option %s\n", flag.c_str());
      return 2;
    }
  }
  if (batch < 1) {
    std::fprintf(stderr, "--batch must be at least 1\n");
    return 2;
  }
  if (layout != "bhsd" && layout != "bshd") {
    std::fprintf(stderr, "--layout must be bhsd or bshd\n");
    return 2;
  }
  const Entry entry = EntryFor(path);
  const bool avx512 = cpu::CpuSupportsAvx512();
  const bool avx2 = cpu::CpuSupportsAvx2Fma();
  const double peak = avx512 && (path == "dispatch" || path == "avx512") ? MeasureFmaPeakGflops(512)
                      : avx2 && (path == "dispatch" || path == "avx2")     ? MeasureFmaPeakGflops(256)
                                                                           : 0.0;
  std::printf("path %s (dispatch picks %s); fp32 FMA peak per thread %.1f GFLOP/s (measured); %s clock\n",
              path.c_str(), flash_attention_cpu_isa(), peak, cpu_clock ? "CPU-time" : "wall");

  std::mt19937 rng(1);
  std::vector<Config> configs;
  std::vector<std::unique_ptr<Tensors>> tensors;
  for (const Shape& shape : kShapes) {
    if (!filter.empty() && std::string(shape.name).find(filter) == std::string::npos) continue;
    for (const std::string& d : Split(dtype_list)) {
      const DType dtype = d == "f16" ? DType::kFloat16 : DType::kFloat32;
      tensors.push_back(std::make_unique<Tensors>(shape, dtype, batch, layout == "bshd", rng));
      for (const std::string& t : Split(thread_list)) {
        if (std::atoi(t.c_str()) < 1 || std::atoi(t.c_str()) > 64) continue;
        configs.push_back({&shape, tensors.back().get(), dtype, std::atoi(t.c_str()), {}});
      }
    }
  }

  std::vector<std::unique_ptr<ThreadPool>> pools(65);
  for (int round = 0; round < rounds; ++round) {
    for (Config& config : configs) {
      const Tensors& t = *config.tensors;
      auto& pool = pools[static_cast<size_t>(config.threads)];
      if (pool == nullptr) pool = std::make_unique<ThreadPool>(config.threads);
      const ParallelRunner runner = pool->runner();
      const std::string error = entry(t.params, runner);  // warm-up
      if (!error.empty()) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return 1;
      }
      std::vector<double> calls;
      const auto round_start = std::chrono::steady_clock::now();
      do {
        const double start = NowMs(cpu_clock);
        entry(t.params, runner);
        calls.push_back(NowMs(cpu_clock) - start);
      } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - round_start).count() < seconds ||
               calls.size() < 3);
      config.round_ms.push_back(Median(calls));
    }
  }

  // On a shared machine the best round is the closest to the kernel's own speed; the median says
  // what a run met.
  std::printf("%-26s %-5s %3s %9s %9s %9s %8s %9s\n", "shape", "dtype", "thr", "best ms", "median ms", "GFLOP/s",
              "of peak", "(median)");
  for (const Config& config : configs) {
    const double best = *std::min_element(config.round_ms.begin(), config.round_ms.end());
    const double median = Median(config.round_ms);
    const auto gflops = [&](double ms) { return config.shape->Flops() * batch / (ms * 1e-3) * 1e-9; };
    const auto of_peak = [&](double ms) { return peak > 0 ? gflops(ms) / (peak * config.threads) * 100 : 0.0; };
    std::printf("%-26s %-5s %3d %9.3f %9.3f %9.1f %7.1f%% %8.1f%%\n", config.shape->name,
                config.dtype == DType::kFloat16 ? "f16" : "f32", config.threads, best, median, gflops(best),
                of_peak(best), of_peak(median));
  }
  return 0;
}

}  // namespace
}  // namespace ortflash::bench

int main(int argc, char** argv) { return ortflash::bench::Main(argc, argv); }
