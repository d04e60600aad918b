// The cuda backend's env state, op-call resources and device-memory functions (gpu.h).
#include "gpu.h"

#include <cstdlib>
#include <cstring>

#include "args.h"
#include "env.h"
#include "pages.h"

namespace rk::addon {

#if RLHF_KERNELS_HAVE_CUDA

namespace {

// Marks our device handles, so that no other External is taken for one.
constexpr napi_type_tag kDeviceTag = {0x726b2d6465766963ull, 0x652d626c6f636b31ull};

// V8 is told of external memory in steps of at most 512 MiB (one huge step can trigger needless GCs).
void adjust_external(Napi::Env env, int64_t delta) {
  constexpr int64_t step = int64_t(512) << 20;
  while (delta != 0) {
    const int64_t d = delta > step ? step : delta < -step ? -step : delta;
    Napi::MemoryManagement::AdjustExternalMemory(env, d);
    delta -= d;
  }
}

bool sticky(cudaError_t err) {
  switch (err) {
    case cudaErrorIllegalAddress: case cudaErrorLaunchFailure: case cudaErrorAssert: case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction: case cudaErrorMisalignedAddress: case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc: case cudaErrorLaunchTimeout: case cudaErrorECCUncorrectable: case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::shared_ptr<GpuEnv> GpuEnv::start(std::string& why) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaSuccess && count == 0) err = cudaErrorNoDevice;
  if (err == cudaSuccess) err = cudaSetDevice(0);
  std::shared_ptr<GpuEnv> g(new GpuEnv);
  if (err == cudaSuccess) err = cudaStreamCreateWithFlags(&g->stream_, cudaStreamNonBlocking);
  if (err != cudaSuccess) {
    cudaGetLastError();
    why = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    g->stream_ = nullptr;
    return nullptr;
  }
  return g;
}

GpuEnv::~GpuEnv() { release(); }

void GpuEnv::release() {
  if (stream_ == nullptr) return;  // released at env teardown already
  cudaStreamSynchronize(stream_);
  device.release_all();
  pinned.release_all();
  cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

void GpuEnv::account(Napi::Env env, int delta_tensors, int64_t delta_bytes) {
  tensor_bytes_ = size_t(int64_t(tensor_bytes_) + delta_bytes);
  tensors_ += delta_tensors;
  adjust_external(env, delta_bytes);
}

Napi::Value GpuEnv::wrap(Napi::Env env, const std::shared_ptr<GpuEnv>& self, void* ptr, size_t bytes) {
  auto* block = new DeviceBlock{self, ptr, bytes};
  // the finaliser only queues the free: cudaFree would synchronise the device on the JS thread mid-GC
  auto handle = Napi::External<DeviceBlock>::New(env, block, [](Napi::Env, DeviceBlock* b) {
    if (b->ptr != nullptr) b->owner->queue_release(b->ptr, b->bytes);
    delete b;
  });
  handle.TypeTag(&kDeviceTag);
  account(env, 1, int64_t(bytes));
  return handle;
}

DeviceBlock* GpuEnv::unwrap(Napi::Value v) const {
  if (!v.IsExternal()) return nullptr;
  auto handle = v.As<Napi::External<DeviceBlock>>();
  if (!handle.CheckTypeTag(&kDeviceTag)) return nullptr;
  DeviceBlock* b = handle.Data();
  return b->owner.get() == this && b->ptr != nullptr ? b : nullptr;
}

void GpuEnv::dispose(Napi::Env env, Napi::Value v) {
  DeviceBlock* b = unwrap(v);
  if (b == nullptr) return;
  device.free(b->ptr);
  account(env, -1, -int64_t(b->bytes));
  b->ptr = nullptr;
}

void GpuEnv::queue_release(void* ptr, size_t bytes) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  queue_.emplace_back(ptr, bytes);
}

void GpuEnv::drain(Napi::Env env) {
  std::vector<std::pair<void*, size_t>> queued;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queued.swap(queue_);
  }
  for (auto& [ptr, bytes] : queued) {
    device.free(ptr);
    account(env, -1, -int64_t(bytes));
  }
}

void GpuEnv::fail(cudaError_t err) {
  if (sticky(err) && broken_.empty()) {
    broken_ = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err) +
              " (this error leaves the CUDA context unusable; restart the process)";
  }
}

std::shared_ptr<GpuEnv> gpu_env(Napi::Env env) {
  EnvData* data = env.GetInstanceData<EnvData>();
  if (!data->gpu_tried) {
    data->gpu_tried = true;
    auto g = GpuEnv::start(data->gpu_why);
    if (g && !g->attach(env, data->gpu_why)) g = nullptr;
    data->gpu = g;
  }
  if (!data->gpu) throw coded_error(env, "ERR_CUDA_UNAVAILABLE", "the cuda backend is unavailable: " + data->gpu_why);
  if (!data->gpu->broken().empty()) throw coded_error(env, "ERR_CUDA", "the cuda backend failed earlier: " + data->gpu->broken());
  data->gpu->drain(env);
  return data->gpu;
}

Napi::Error cuda_error(Napi::Env env, const char* op, cudaError_t err) {
  if (err == cudaErrorMemoryAllocation) {
    return coded_error(env, "ERR_CUDA_OOM", std::string(op) + ": out of GPU memory (rk.memory() shows what is held; dispose() tensors or releaseCachedMemory())");
  }
  Napi::Error e = coded_error(env, "ERR_CUDA", std::string(op) + ": CUDA error " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  e.Set("cudaError", Napi::Number::New(env, int(err)));
  return e;
}

void throw_cuda(Napi::Env env, const char* op, cudaError_t err) { throw cuda_error(env, op, err); }

// ---- one op call ----

GpuCall::~GpuCall() {
  // a call that failed half-way may still have copies in flight from its pinned buffers
  if (!done_ && !pinned_temps_.empty()) cudaStreamSynchronize(stream());
  for (void* p : device_temps_) env_->device.free(p);
  for (void* p : pinned_temps_) env_->pinned.free(p);
}

void* GpuCall::take(Napi::Env env, gpu::CachingAllocator& pool, size_t bytes, std::vector<void*>& list) {
  void* p = nullptr;
  const cudaError_t err = pool.allocate(bytes, &p);
  if (err != cudaSuccess) throw_cuda(env, "rlhf-kernels", err);
  list.push_back(p);
  return p;
}

const void* GpuCall::upload(Napi::Env env, const void* host, size_t bytes) {
  void* staging = take(env, env_->pinned, bytes, pinned_temps_);
  void* dev = take(env, env_->device, bytes, device_temps_);
  if (bytes > 0) {
    std::memcpy(staging, host, bytes);
    const cudaError_t err = cudaMemcpyAsync(dev, staging, bytes, cudaMemcpyHostToDevice, stream());
    if (err != cudaSuccess) throw_cuda(env, "rlhf-kernels", err);
  }
  staged_.emplace_back(dev, staging);  // what the checks read: exactly the bytes the device gets
  return dev;
}

const void* GpuCall::host_of(const void* device) const {
  for (auto& [d, h] : staged_) if (d == device) return h;
  return nullptr;
}

void* GpuCall::output(Napi::Env env, const char* name, int64_t n, const char* dtype) {
  const size_t es = std::strcmp(dtype, "float32") == 0 ? 4 : 2;
  const size_t bytes = size_t(n) * es;
  void* dev = nullptr;
  const cudaError_t err = env_->device.allocate(bytes, &dev);
  if (err != cudaSuccess) throw_cuda(env, "rlhf-kernels", err);
  // a device result is owned by its handle from put() on; until then it is this call's to free
  device_temps_.push_back(dev);
  void* host = device_results_ ? nullptr : take(env, env_->pinned, bytes, pinned_temps_);
  if (poison_outputs() && bytes > 0) cudaMemsetAsync(dev, 0xff, bytes, stream());  // pages.h
  outputs_.push_back({name, dev, n, es, dtype, host});
  return dev;
}

void* GpuCall::scratch(size_t bytes, int slot) {
  if (scratch_[slot] == nullptr || scratch_bytes_[slot] < bytes) {
    scratch_[slot] = take(js_, env_->device, bytes, device_temps_);
    scratch_bytes_[slot] = bytes;
  }
  return scratch_[slot];
}

void GpuCall::device_indices(std::string key, std::string expected) {
  index_key_ = std::move(key);
  index_expected_ = std::move(expected);
}

void GpuCall::begin(Napi::Env env) {
  constexpr size_t result_bytes = gpu::RESULT_FLOATS * sizeof(float);
  char* block = static_cast<char*>(take(env, env_->device, result_bytes + sizeof(gpu::DeviceFlags), device_temps_));
  result_ = reinterpret_cast<float*>(block);
  flags_ = reinterpret_cast<gpu::DeviceFlags*>(block + result_bytes);
  host_result_ = static_cast<float*>(take(env, env_->pinned, result_bytes + sizeof(gpu::DeviceFlags), pinned_temps_));
  cudaMemsetAsync(result_, 0, result_bytes, stream());
  cudaMemsetAsync(flags_, 0x7f, sizeof(gpu::DeviceFlags), stream());  // first_bad_row = 0x7f7f7f7f: none
}

cudaError_t GpuCall::read_back() {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (result_) {
    err = cudaMemcpyAsync(host_result_, result_, gpu::RESULT_FLOATS * sizeof(float) + sizeof(gpu::DeviceFlags), cudaMemcpyDeviceToHost, stream());
    if (err != cudaSuccess) return err;
  }
  for (const Output& o : outputs_) {
    if (o.host == nullptr || o.n == 0) continue;
    err = cudaMemcpyAsync(o.host, o.device, size_t(o.n) * o.es, cudaMemcpyDeviceToHost, stream());
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

void GpuCall::check_flags(Napi::Env env, const char* op) const {
  if (host_result_ == nullptr) return;
  int32_t row;
  std::memcpy(&row, host_result_ + gpu::RESULT_FLOATS, sizeof row);
  if (row == 0x7f7f7f7f) return;
  throw_range(env, op, index_key_ + "[" + std::to_string(row) + "] must be " + index_expected_ +
                         " (found on the GPU; the row's outputs are not meaningful)");
}

void GpuCall::put(Napi::Env env, OutputList& list) {
  for (const Output& o : outputs_) {
    if (o.host != nullptr) {
      Napi::TypedArray a = o.es == 4 ? Napi::TypedArray(Napi::Float32Array::New(env, size_t(o.n))) : Napi::TypedArray(Napi::Uint16Array::New(env, size_t(o.n)));
      advise_huge_pages(data_of(a), size_t(o.n) * o.es);  // fresh pages, written in full by the copy
      if (o.n > 0) std::memcpy(data_of(a), o.host, size_t(o.n) * o.es);
      list.add(o.name, a);
    } else {
      for (void*& p : device_temps_) if (p == o.device) p = nullptr;  // now the handle's
      Napi::Object d = Napi::Object::New(env);
      d.Set("device", env_->wrap(env, env_, o.device, size_t(o.n) * o.es));
      d.Set("length", Napi::Number::New(env, double(o.n)));
      d.Set("dtype", Napi::String::New(env, o.dtype));
      list.add(o.name, d);
    }
  }
  outputs_.clear();
}

// ---- completion on the JS thread ----

bool GpuEnv::attach(Napi::Env env, std::string& why) {
  // the closures hold the GpuEnv until the env's teardown, when Completions lets them go
  auto self = shared_from_this();
  completions_ = Completions::make(
      env, [self] { if (self->stream_ != nullptr) cudaStreamSynchronize(self->stream_); },  // every stream callback has run
      [self] { self->release(); }, why);
  return completions_ != nullptr;
}

namespace {

// A stream callback (a CUDA thread: no CUDA and no JS calls here): the completion goes to the JS thread.
void CUDART_CB on_stream(cudaStream_t, cudaError_t status, void* data) {
  auto* item = static_cast<Completions::Item*>(data);
  item->owner->post(item, int(status));
}

}  // namespace

Napi::Promise when_stream_done(Napi::Env env, GpuEnv& g, Completion complete) {
  auto [promise, item] = g.completions().expect(env, [complete = std::move(complete)](Napi::Env e, int status) {
    return complete(e, cudaError_t(status));
  });
  const cudaError_t err = cudaStreamAddCallback(g.stream(), on_stream, item, 0);
  if (err != cudaSuccess) {
    cudaGetLastError();
    // the completion still runs, with the error: it gives back what it holds (staging blocks) and rejects
    g.completions().settle_now(env, item, int(err));
  }
  return promise;
}

// ---- device tensors: upload, download, dispose, memory; benchmark helpers ----

namespace {

Napi::TypedArray typed_array(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  if (!info[i].IsTypedArray()) throw_type(info.Env(), fn, "a typed array is expected");
  return info[i].As<Napi::TypedArray>();
}

void* bytes_of(const Napi::TypedArray& a) { return data_of(a); }

DeviceBlock& block_of(GpuEnv& g, const Napi::CallbackInfo& info, size_t i, const char* fn) {
  DeviceBlock* b = g.unwrap(info[i]);
  if (b == nullptr) {
    throw coded_error(info.Env(), "ERR_DISPOSED", std::string(fn) + ": not a live device tensor of this thread (disposed, or made elsewhere)");
  }
  return *b;
}

// cudaUpload(typedArray) → handle: a device copy of the array's bytes (the copy is staged before return).
Napi::Value Upload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray a = typed_array(info, 0, "to('cuda')");
  auto g = gpu_env(env);
  const size_t bytes = a.ByteLength();
  void* dev = nullptr;
  cudaError_t err = g->device.allocate(bytes, &dev);
  if (err != cudaSuccess) throw_cuda(env, "to('cuda')", err);
  // from pageable memory the driver copies the source before returning, so the array may change afterwards
  if (bytes > 0) err = cudaMemcpyAsync(dev, bytes_of(a), bytes, cudaMemcpyHostToDevice, g->stream());
  if (err != cudaSuccess) {
    g->device.free(dev);
    g->fail(err);
    throw_cuda(env, "to('cuda')", err);
  }
  return g->wrap(env, g, dev, bytes);
}

// The tensor and host array of a download: the array must have the tensor's byte length.
std::pair<DeviceBlock*, Napi::TypedArray> download_args(GpuEnv& g, const Napi::CallbackInfo& info, const char* fn) {
  DeviceBlock& b = block_of(g, info, 0, fn);
  Napi::TypedArray a = typed_array(info, 1, fn);
  if (a.ByteLength() != b.bytes) throw_range(info.Env(), fn, "the host array must have the tensor's byte length");
  return {&b, a};
}

// cudaDownload(handle, typedArray): the device bytes into the array (after all queued work).
Napi::Value Download(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = gpu_env(env);
  auto [b, a] = download_args(*g, info, "toHost");
  cudaError_t err = b->bytes > 0 ? cudaMemcpyAsync(bytes_of(a), b->ptr, b->bytes, cudaMemcpyDeviceToHost, g->stream()) : cudaSuccess;
  if (err == cudaSuccess) err = cudaStreamSynchronize(g->stream());
  if (err != cudaSuccess) {
    g->fail(err);
    throw_cuda(env, "toHost", err);
  }
  return env.Undefined();
}

// cudaDownloadAsync(handle, typedArray) → Promise<void>: through pinned memory; the JS thread only enqueues.
Napi::Value DownloadAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = gpu_env(env);
  auto [block, a] = download_args(*g, info, "toHostAsync");
  DeviceBlock& b = *block;
  void* staging = nullptr;
  cudaError_t err = g->pinned.allocate(b.bytes, &staging);
  if (err == cudaSuccess && b.bytes > 0) err = cudaMemcpyAsync(staging, b.ptr, b.bytes, cudaMemcpyDeviceToHost, g->stream());
  if (err != cudaSuccess) {
    g->pinned.free(staging);
    throw_cuda(env, "toHostAsync", err);
  }
  auto target = std::make_shared<Napi::Reference<Napi::TypedArray>>(Napi::Persistent(a));
  const size_t bytes = b.bytes;
  return when_stream_done(env, *g, [g, staging, target, bytes](Napi::Env env, cudaError_t status) -> Napi::Value {
    // the staging block goes back to the pool when this returns or throws, after the copy out of it
    const std::unique_ptr<void, std::function<void(void*)>> held(staging, [g](void* p) { g->pinned.free(p); });
    if (status != cudaSuccess) {
      g->fail(status);
      throw cuda_error(env, "toHostAsync", status);
    }
    // the array is the caller's: it may have been detached or resized while the copy ran
    Napi::TypedArray out = target->Value();
    if (view_of(out).length * out.ElementSize() != bytes) {
      throw_range(env, "toHostAsync", "the host array changed size while the copy ran");
    }
    if (bytes > 0) std::memcpy(bytes_of(out), staging, bytes);
    return env.Undefined();
  });
}

Napi::Value Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EnvData* data = env.GetInstanceData<EnvData>();
  if (data->gpu) data->gpu->dispose(env, info[0]);
  return env.Undefined();
}

// cudaMemory() → what this env holds on the GPU (zeros before the first GPU call).
Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EnvData* data = env.GetInstanceData<EnvData>();
  Napi::Object o = Napi::Object::New(env);
  GpuEnv* g = data->gpu.get();
  if (g) g->drain(env);
  o.Set("tensors", Napi::Number::New(env, g ? double(g->tensors()) : 0));
  o.Set("tensorBytes", Napi::Number::New(env, g ? double(g->tensor_bytes()) : 0));
  o.Set("deviceBytes", Napi::Number::New(env, g ? double(g->device.in_use_bytes()) : 0));
  o.Set("cachedBytes", Napi::Number::New(env, g ? double(g->device.cached_bytes()) : 0));
  o.Set("pinnedBytes", Napi::Number::New(env, g ? double(g->pinned.in_use_bytes() + g->pinned.cached_bytes()) : 0));
  return o;
}

// cudaReleaseCached(): waits for the stream, then gives every cached block back to the driver.
Napi::Value ReleaseCached(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EnvData* data = env.GetInstanceData<EnvData>();
  if (!data->gpu) return env.Undefined();
  GpuEnv& g = *data->gpu;
  g.drain(env);
  cudaError_t err = cudaStreamSynchronize(g.stream());
  if (err == cudaSuccess) err = g.device.release_cached();
  if (err == cudaSuccess) err = g.pinned.release_cached();
  if (err != cudaSuccess) throw_cuda(env, "releaseCachedMemory", err);
  return env.Undefined();
}

DType dtype_of(Napi::Env env, const Napi::Value& v) {
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "float32") return DType::f32;
  if (s == "float64") return DType::f64;
  if (s == "bfloat16") return DType::bf16;
  if (s == "float16") return DType::f16;
  throw Napi::TypeError::New(env, "a float dtype is expected");
}

size_t dtype_bytes(DType d) { return d == DType::f64 ? 8 : d == DType::f32 ? 4 : 2; }

// cudaEmpty(bytes) → handle of uninitialised device memory (benchmarks fill it on the device).
Napi::Value Empty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = gpu_env(env);
  const size_t bytes = size_t(info[0].As<Napi::Number>().Int64Value());
  void* dev = nullptr;
  const cudaError_t err = g->device.allocate(bytes, &dev);
  if (err != cudaSuccess) throw_cuda(env, "cudaEmpty", err);
  return g->wrap(env, g, dev, bytes);
}

// cudaFillNormal(handle, dtype, seed, scale) and cudaFillInt(handle, limit, seed): benchmark inputs.
Napi::Value FillNormal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = gpu_env(env);
  DeviceBlock& b = block_of(*g, info, 0, "cudaFillNormal");
  const DType d = dtype_of(env, info[1]);
  const cudaError_t err = gpu::fill_normal(b.ptr, d, int64_t(b.bytes / dtype_bytes(d)), uint64_t(info[2].As<Napi::Number>().Int64Value()),
                                           info[3].As<Napi::Number>().FloatValue(), g->stream());
  if (err != cudaSuccess) throw_cuda(env, "cudaFillNormal", err);
  return env.Undefined();
}

Napi::Value FillInt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = gpu_env(env);
  DeviceBlock& b = block_of(*g, info, 0, "cudaFillInt");
  const cudaError_t err = gpu::fill_uniform_int(static_cast<int32_t*>(b.ptr), int64_t(b.bytes / 4), info[1].As<Napi::Number>().Int32Value(),
                                                uint64_t(info[2].As<Napi::Number>().Int64Value()), g->stream());
  if (err != cudaSuccess) throw_cuda(env, "cudaFillInt", err);
  return env.Undefined();
}

// cudaCopyBandwidth(bytes, iterations) → GB/s of device-to-device cudaMemcpyAsync, counting read + write.
Napi::Value CopyBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = gpu_env(env);
  const size_t bytes = size_t(info[0].As<Napi::Number>().Int64Value());
  const int iters = info[1].As<Napi::Number>().Int32Value();
  void *a = nullptr, *b = nullptr;
  cudaError_t err = g->device.allocate(bytes, &a);
  if (err == cudaSuccess) err = g->device.allocate(bytes, &b);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  float ms = 0.f;
  if (err == cudaSuccess) err = cudaMemsetAsync(a, 0, bytes, g->stream());
  if (err == cudaSuccess) err = cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g->stream());  // warm-up
  if (err == cudaSuccess) {
    cudaEventRecord(start, g->stream());
    for (int i = 0; i < iters; i++) cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g->stream());
    cudaEventRecord(stop, g->stream());
    err = cudaEventSynchronize(stop);
    if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, start, stop);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  g->device.free(a);
  g->device.free(b);
  if (err != cudaSuccess) throw_cuda(env, "cudaCopyBandwidth", err);
  return Napi::Number::New(env, 2.0 * double(bytes) * iters / (double(ms) * 1e-3) / 1e9);
}

}  // namespace

void export_gpu(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaUpload", Napi::Function::New(env, Upload, "cudaUpload"));
  exports.Set("cudaDownload", Napi::Function::New(env, Download, "cudaDownload"));
  exports.Set("cudaDownloadAsync", Napi::Function::New(env, DownloadAsync, "cudaDownloadAsync"));
  exports.Set("cudaDispose", Napi::Function::New(env, Dispose, "cudaDispose"));
  exports.Set("cudaMemory", Napi::Function::New(env, Memory, "cudaMemory"));
  exports.Set("cudaReleaseCached", Napi::Function::New(env, ReleaseCached, "cudaReleaseCached"));
  exports.Set("cudaEmpty", Napi::Function::New(env, Empty, "cudaEmpty"));
  exports.Set("cudaFillNormal", Napi::Function::New(env, FillNormal, "cudaFillNormal"));
  exports.Set("cudaFillInt", Napi::Function::New(env, FillInt, "cudaFillInt"));
  exports.Set("cudaCopyBandwidth", Napi::Function::New(env, CopyBandwidth, "cudaCopyBandwidth"));
}

#else

// Built without CUDA: no device functions (the loader reports why the cuda backend is absent).
void export_gpu(Napi::Env, Napi::Object) {}

#endif

}  // namespace rk::addon
