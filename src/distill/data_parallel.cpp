// Data-parallel collectives and DDP-style bucketed gradient all-reduce over c10d (see
// data_parallel.h).
#define USE_C10D_GLOO 1
#include "lineage/distill/data_parallel.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef LINEAGE_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "lineage/core/error.h"

namespace lineage::distill {

namespace {

DataParallel* g_data_parallel = nullptr;

using Clock = std::chrono::steady_clock;

std::string heartbeat_key(int rank) { return "lineage/heartbeat/" + std::to_string(rank); }

int64_t decode_counter(const std::vector<uint8_t>& v) {
  return std::stoll(std::string(v.begin(), v.end()));
}

// One flattened group of parameters whose gradients travel together.
struct Bucket {
  std::vector<size_t> params;  // indices into Impl::params
  std::vector<int64_t> offsets;
  torch::Tensor flat;          // (sum of numel) on the parameters' device and dtype
  size_t ready = 0;
  bool launched = false;
  c10::intrusive_ptr<c10d::Work> work;
};

}  // namespace

struct DataParallel::Impl {
  WorldInfo world;
  ParallelOptions options;
  torch::Device device;
  c10::intrusive_ptr<c10d::TCPStore> store, heartbeat_store;
  c10::intrusive_ptr<c10d::ProcessGroup> cpu_group;   // Gloo: control messages (CPU tensors)
  c10::intrusive_ptr<c10d::ProcessGroup> grad_group;  // Gloo, or NCCL for CUDA tensors
  std::string backend = "gloo";
  std::thread heartbeat;
  std::atomic<bool> stopping{false};
  std::mutex stop_mutex;
  std::condition_variable stop_cv;

  std::vector<torch::Tensor> params;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // kept alive: the hooks live on them
  std::vector<size_t> bucket_of;
  std::vector<Bucket> buckets;
  std::mutex hook_mutex;
  bool armed = false;
  double wait_s = 0;

  Impl(const WorldInfo& w, const ParallelOptions& o, torch::Device d) : world(w), options(o), device(d) {}

  // Names the rank that stopped: the one whose heartbeat no longer advances (or rank 0, whose
  // process hosts the store, when the store itself is gone). Then fails with `what` and the cause.
  [[noreturn]] void peer_failed(const std::string& what, const std::string& cause) {
    std::string who;
    try {
      std::vector<int64_t> before(world.world_size), after(world.world_size);
      for (int r = 0; r < world.world_size; ++r) before[r] = decode_counter(heartbeat_store->get(heartbeat_key(r)));
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      for (int r = 0; r < world.world_size; ++r) after[r] = decode_counter(heartbeat_store->get(heartbeat_key(r)));
      for (int r = 0; r < world.world_size; ++r)
        if (r != world.rank && after[r] == before[r]) who += (who.empty() ? "rank " : ", rank ") + std::to_string(r);
      if (who.empty()) who = "no rank stopped its heartbeat (a rank is alive but not in this collective: mismatched flags?)";
      else who += " stopped (its heartbeat no longer advances)";
    } catch (const std::exception&) {
      who = fmt::format("rank 0 stopped (its rendezvous store at {}:{} is gone)", world.master_addr, world.master_port);
    }
    fail("data-parallel {} failed on rank {} of {}: {}; this rank stops too (continue with --resume RUN_DIR from the "
         "last checkpoint). Cause: {}", what, world.rank, world.world_size, who, cause);
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
    try {
      work->wait(std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000)));
    } catch (const std::exception& e) {
      peer_failed(what, e.what());
    }
  }

  void launch(Bucket& b) {
    for (size_t i = 0; i < b.params.size(); ++i) {
      const torch::Tensor& p = params[b.params[i]];
      auto dst = b.flat.slice(0, b.offsets[i], b.offsets[i] + p.numel());
      if (p.grad().defined()) dst.copy_(p.grad().reshape({-1}));
      else dst.zero_();
    }
    std::vector<torch::Tensor> ts = {b.flat};
    b.work = grad_group->allreduce(ts);
    b.launched = true;
  }
};

namespace {

// Runs after a parameter's gradient has been accumulated into .grad.
struct ReadyHook : torch::autograd::FunctionPostHook {
  DataParallel::Impl* impl;
  size_t index;
  ReadyHook(DataParallel::Impl* i, size_t n) : impl(i), index(n) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    std::lock_guard<std::mutex> lock(impl->hook_mutex);
    if (!impl->armed || !impl->options.overlap) return outputs;
    Bucket& b = impl->buckets[impl->bucket_of[index]];
    if (++b.ready == b.params.size() && !b.launched) impl->launch(b);
    return outputs;
  }
};

}  // namespace

DataParallel::DataParallel(const WorldInfo& w, const ParallelOptions& o, torch::Device device)
    : impl_(std::make_unique<Impl>(w, o, device)) {
  Impl& m = *impl_;
  if (o.backend != "auto" && o.backend != "gloo" && o.backend != "nccl")
    fail("--dist-backend '{}': expected gloo, nccl or auto", o.backend);
  if (!(o.timeout_s > 0)) fail("--dist-timeout {} must be positive (seconds)", o.timeout_s);
  if (!(o.bucket_mb > 0)) fail("--bucket-mb {} must be positive", o.bucket_mb);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(w.master_port);
  so.isServer = w.rank == 0;
  so.numWorkers = w.world_size;
  so.waitWorkers = true;
  so.timeout = timeout;
  try {
    m.store = c10::make_intrusive<c10d::TCPStore>(w.master_addr, so);
    c10d::TCPStoreOptions hs = so;
    hs.isServer = false;
    hs.numWorkers = c10::nullopt;
    hs.waitWorkers = false;
    m.heartbeat_store = c10::make_intrusive<c10d::TCPStore>(w.master_addr, hs);
  } catch (const std::exception& e) {
    fail("rank {} of {} could not meet the others at {}:{} within {} s (MASTER_ADDR/MASTER_PORT, --dist-timeout): {}", w.rank,
         w.world_size, w.master_addr, w.master_port, o.timeout_s, e.what());
  }
  m.heartbeat_store->set(heartbeat_key(w.rank), std::vector<uint8_t>{'0'});
  m.heartbeat = std::thread([&m] {
    int64_t beat = 0;
    std::unique_lock<std::mutex> lock(m.stop_mutex);
    while (!m.stop_cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return m.stopping.load(); })) {
      std::string s = std::to_string(++beat);
      try {
        m.heartbeat_store->set(heartbeat_key(m.world.rank), std::vector<uint8_t>(s.begin(), s.end()));
      } catch (const std::exception&) {
        // The store's host (rank 0) is gone: the next collective says so.
      }
    }
  });
  auto gloo_group = [&](const std::string& prefix) {
    auto go = c10d::ProcessGroupGloo::Options::create();
    go->timeout = timeout;
    // The interface this rank listens on: GLOO_SOCKET_IFNAME when set (as in PyTorch), loopback
    // for a job on one machine, else the address this host's name resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    bool loopback = w.master_addr == "localhost" || w.master_addr.rfind("127.", 0) == 0;
    if (ifname && *ifname) go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (loopback) go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(prefix, m.store);
    return c10::intrusive_ptr<c10d::ProcessGroup>(c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, w.rank, w.world_size, go));
  };
  try {
    m.cpu_group = gloo_group("lineage/cpu/");
    bool nccl = device.is_cuda() && o.backend != "gloo";
#ifdef LINEAGE_WITH_NCCL
    if (nccl) {
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = timeout;
      m.grad_group = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("lineage/nccl/", m.store),
                                                                 w.rank, w.world_size, no);
      m.backend = "nccl";
    }
#else
    if (nccl && o.backend == "nccl")
      fail("--dist-backend nccl: this libtorch was built without NCCL (use gloo, which also reduces CUDA tensors through the host)");
#endif
    if (!m.grad_group) m.grad_group = gloo_group("lineage/grad/");
  } catch (const lineage::Error&) {
    throw;
  } catch (const std::exception& e) {
    m.peer_failed("rendezvous", e.what());
  }
}

DataParallel::~DataParallel() {
  impl_->stopping = true;
  impl_->stop_cv.notify_all();
  if (impl_->heartbeat.joinable()) impl_->heartbeat.join();
}

int DataParallel::rank() const { return impl_->world.rank; }
int DataParallel::world_size() const { return impl_->world.world_size; }
const ParallelOptions& DataParallel::options() const { return impl_->options; }
std::string DataParallel::backend() const { return impl_->backend; }

void DataParallel::all_reduce_sum(torch::Tensor& t) {
  bool host = !t.is_cuda() || impl_->backend != "nccl";
  std::vector<torch::Tensor> ts = {t};
  impl_->wait((host ? impl_->cpu_group : impl_->grad_group)->allreduce(ts), "all-reduce");
}

void DataParallel::broadcast(std::vector<torch::Tensor>& ts) {
  for (auto& t : ts) {
    std::vector<torch::Tensor> one = {t};
    bool host = !t.is_cuda() || impl_->backend != "nccl";
    impl_->wait((host ? impl_->cpu_group : impl_->grad_group)->broadcast(one), "broadcast");
  }
}

std::string DataParallel::broadcast_bytes(const std::string& bytes) {
  torch::Tensor size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64);
  std::vector<torch::Tensor> s = {size};
  impl_->wait(impl_->cpu_group->broadcast(s), "broadcast");
  const int64_t n = size.item<int64_t>();
  torch::Tensor buf = torch::empty({std::max<int64_t>(n, 1)}, torch::kUInt8);
  if (rank() == 0 && n > 0) std::memcpy(buf.data_ptr<uint8_t>(), bytes.data(), static_cast<size_t>(n));
  std::vector<torch::Tensor> b = {buf};
  impl_->wait(impl_->cpu_group->broadcast(b), "broadcast");
  return std::string(reinterpret_cast<const char*>(buf.data_ptr<uint8_t>()), static_cast<size_t>(n));
}

std::vector<int64_t> DataParallel::all_gather(int64_t value) {
  std::vector<torch::Tensor> in = {torch::tensor({value}, torch::kInt64)};
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < world_size(); ++r) out[0].push_back(torch::empty({1}, torch::kInt64));
  impl_->wait(impl_->cpu_group->allgather(out, in), "all-gather");
  std::vector<int64_t> v;
  for (auto& t : out[0]) v.push_back(t.item<int64_t>());
  return v;
}

void DataParallel::barrier() {
  torch::Tensor t = torch::zeros({1}, torch::kInt64);
  all_reduce_sum(t);
}

void DataParallel::attach(const std::vector<torch::Tensor>& params) {
  Impl& m = *impl_;
  if (!m.params.empty()) fail("DataParallel::attach called twice");
  m.params = params;
  m.bucket_of.assign(params.size(), 0);
  const int64_t cap = static_cast<int64_t>(m.options.bucket_mb * 1024 * 1024);
  int64_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {  // reverse: the last layers' gradients come first
    const torch::Tensor& p = params[k];
    if (!p.requires_grad()) fail("DataParallel: parameter {} does not require a gradient", k);
    int64_t pb = p.numel() * static_cast<int64_t>(p.element_size());
    if (m.buckets.empty() || (bytes > 0 && bytes + pb > cap)) {
      m.buckets.emplace_back();
      bytes = 0;
    }
    Bucket& b = m.buckets.back();
    b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params[b.params.back()].numel());
    b.params.push_back(k);
    m.bucket_of[k] = m.buckets.size() - 1;
    bytes += pb;
  }
  for (Bucket& b : m.buckets) {
    const torch::Tensor& last = params[b.params.back()];
    b.flat = torch::zeros({b.offsets.back() + last.numel()}, last.options().requires_grad(false));
  }
  for (size_t k = 0; k < params.size(); ++k) {
    auto acc = torch::autograd::impl::grad_accumulator(params[k]);
    if (!acc) fail("DataParallel: parameter {} has no gradient accumulator (not a leaf?)", k);
    acc->add_post_hook(std::make_unique<ReadyHook>(&m, k));
    m.accumulators.push_back(std::move(acc));
  }
}

void DataParallel::arm(bool reduce) {
  std::lock_guard<std::mutex> lock(impl_->hook_mutex);
  impl_->armed = reduce;
  for (Bucket& b : impl_->buckets) {
    b.ready = 0;
    b.launched = false;
    b.work.reset();
  }
}

void DataParallel::finish() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.hook_mutex);
    m.armed = false;
    for (Bucket& b : m.buckets)  // without overlap, or parameters that got no gradient
      if (!b.launched) m.launch(b);
  }
  auto t0 = Clock::now();
  for (Bucket& b : m.buckets) m.wait(b.work, "gradient all-reduce");
  m.wait_s += std::chrono::duration<double>(Clock::now() - t0).count();
  torch::NoGradGuard no_grad;
  for (Bucket& b : m.buckets) {
    for (size_t i = 0; i < b.params.size(); ++i) {
      torch::Tensor& p = m.params[b.params[i]];
      auto src = b.flat.slice(0, b.offsets[i], b.offsets[i] + p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(src);
      else p.mutable_grad() = src.clone();
    }
    b.work.reset();
  }
}

double DataParallel::take_wait_seconds() {
  double s = impl_->wait_s;
  impl_->wait_s = 0;
  return s;
}

void DataParallel::check_identical(const std::vector<torch::Tensor>& params, int64_t step) {
  // FNV-1a over the bytes of every parameter, in order.
  uint64_t h = 1469598103934665603ULL;
  for (const auto& p : params) {
    torch::Tensor c = p.detach().to(torch::kCPU).contiguous();
    const auto* bytes = static_cast<const uint8_t*>(c.data_ptr());
    const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
    for (size_t i = 0; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ULL;
  }
  std::vector<int64_t> all = all_gather(static_cast<int64_t>(h));
  for (int r = 1; r < world_size(); ++r)
    if (all[r] != all[0])
      fail("data-parallel: the weights of rank {} differ from rank 0's after step {} (digest {:016x} vs {:016x}): the ranks "
           "diverged (different flags, data or libtorch builds?)", r, step, static_cast<uint64_t>(all[r]),
           static_cast<uint64_t>(all[0]));
}

DataParallel* data_parallel() { return g_data_parallel; }
void set_data_parallel(DataParallel* dp) { g_data_parallel = dp; }

std::vector<int64_t> rank_slice(const std::vector<int64_t>& global, int rank, int world) {
  const size_t per = global.size() / static_cast<size_t>(world);
  return std::vector<int64_t>(global.begin() + static_cast<std::ptrdiff_t>(per * rank),
                              global.begin() + static_cast<std::ptrdiff_t>(per * (rank + 1)));
}

}  // namespace lineage::distill
