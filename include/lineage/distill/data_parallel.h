// Data-parallel training over libtorch's c10d, the engine under PyTorch's DDP: a TCPStore
// rendezvous hosted by rank 0, ProcessGroupGloo for CPU tensors (and for the small control
// messages), ProcessGroupNCCL for CUDA tensors where libtorch was built with it.
//
// Gradients are averaged as DDP's reducer does (Li et al., "PyTorch Distributed", VLDB 2020):
// parameters in reverse registration order (about the order backward produces their gradients)
// are grouped into buckets of ~bucket_mb; a post-hook on each parameter's gradient accumulator
// marks it ready, and a bucket whose parameters are all ready is flattened and its all-reduce
// started at once, so communication overlaps the rest of backward. finish() waits for every
// bucket and copies the sums back into .grad. The trainer scales each rank's loss by its share of
// the global batch's loss tokens, so the sum over ranks is the gradient of the global batch mean.
//
// A rank that dies or hangs: every collective here fails after the job's timeout at the latest
// (a dead peer's closed socket fails it at once), and the message names the rank whose heartbeat
// (a counter each rank advances in the store twice a second) stopped.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "lineage/distill/launch.h"

namespace lineage::distill {

class DataParallel {
 public:
  // Joins the job `w` describes; `device` is where the model's tensors live (CUDA tensors go over
  // NCCL when libtorch has it and o.backend allows). Blocks until every rank has joined, or fails
  // after o.timeout_s naming the address it waited on.
  DataParallel(const WorldInfo& w, const ParallelOptions& o, torch::Device device);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const;
  int world_size() const;
  bool writes() const { return rank() == 0; }  // rank 0 alone writes files
  const ParallelOptions& options() const;
  std::string backend() const;  // "gloo" or "nccl": what carries the gradients

  // Collectives on every rank, in the same order. Each fails naming the rank that is gone.
  void all_reduce_sum(torch::Tensor& t);                       // in place, any device
  void broadcast(std::vector<torch::Tensor>& ts);              // rank 0's values, in place
  std::string broadcast_bytes(const std::string& bytes);       // rank 0's bytes on every rank
  std::vector<int64_t> all_gather(int64_t value);              // one value per rank
  void barrier();

  // Gradient averaging for `params` (hooks on their gradient accumulators; call once).
  void attach(const std::vector<torch::Tensor>& params);
  // Before a backward: whether it is the step's last micro-batch (the one whose gradients are
  // reduced; earlier ones accumulate locally, as DDP's no_sync).
  void arm(bool reduce);
  // After that backward: the sum over ranks of every .grad, in place.
  void finish();
  // Seconds spent waiting for all-reduces in finish() and bytes reduced, since the last take.
  double take_wait_seconds();

  // Fails unless every rank holds bit-identical `params` (a 64-bit digest of their bytes).
  void check_identical(const std::vector<torch::Tensor>& params, int64_t step);

 struct Impl;  // opaque: c10d's headers stay out of this one

 private:
  std::unique_ptr<Impl> impl_;
};

// The job this process belongs to (set by the CLI for WORLD_SIZE > 1); null in a single run.
DataParallel* data_parallel();
void set_data_parallel(DataParallel* dp);

// The rows of a global batch that `rank` of `world` takes: a contiguous slice, so N ranks x B
// rows see what one rank with N*B rows sees.
std::vector<int64_t> rank_slice(const std::vector<int64_t>& global, int rank, int world);

}  // namespace lineage::distill
