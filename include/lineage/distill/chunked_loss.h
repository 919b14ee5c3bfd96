// The distillation objective without the (N, V) logits: the student's last hidden states (N, C)
// and its output projection (V, C) go in, and the rows are taken `chunk_rows` at a time — each
// chunk's logits, teacher signal, loss and gradients for the hidden states and the head computed
// and freed before the next. A custom autograd function hands the gathered gradients to backward.
// At V = 128,256 and 8 x 512 rows, one (N, V) float32 tensor is 2.1 GB and the plain objective
// keeps several (student logits, log-softmax, teacher logits and probabilities, gradients); with
// chunks of 512 rows each is 1/8 of that. The method is Liger Kernel's fused linear cross-entropy
// / JSD (Hsu et al. 2024) and TRL's chunked JSD, here on libtorch for every loss of losses.h.
//
// Every loss equals the unchunked one (kd_loss / kd_loss_sparse / ce_loss on the full logits) up
// to float summation order: each chunk's mean is weighted by its share of the masked rows.
#pragma once
#include <torch/torch.h>

#include <functional>

#include "lineage/distill/losses.h"

namespace lineage::distill {

// The teacher's side of a chunk of rows [begin, end): full-vocabulary logits made on demand (an
// in-process teacher's hidden states times its head, chunk by chunk), or a sparse signal for all
// N rows (a cache, an API's top-k), sliced per chunk.
struct ChunkTeacher {
  std::function<torch::Tensor(int64_t begin, int64_t end)> logits;  // -> (end - begin, V)
  const SparseTeacher* sparse = nullptr;
};

struct ChunkedLoss {
  torch::Tensor loss;       // scalar; backward reaches `hidden` and `head`
  double kd = -1, ce = -1;  // the two parts (means over masked rows) when computed; -1 otherwise
};

// alpha * KD(teacher, student) + (1 - alpha) * CE(targets), each a mean over the masked rows.
//   hidden (N, C) the student's final-normed hidden states, head (V, C) its output projection,
//   targets (N) int64, mask (N) bool. chunk_rows <= 0 or >= N: one chunk.
// The teacher is asked only when alpha > 0.
ChunkedLoss chunked_kd_and_ce(const torch::Tensor& hidden, const torch::Tensor& head, const torch::Tensor& targets,
                              const torch::Tensor& mask, const ChunkTeacher& teacher, const KDOptions& kd, double alpha,
                              int64_t chunk_rows);

// The rows of a sparse teacher signal [begin, end).
SparseTeacher slice_rows(const SparseTeacher& st, int64_t begin, int64_t end);

// Rows per chunk when the recipe says "auto" (--kd-chunk-rows -1): model::logit_chunk_rows —
// none (0) while N x V float32 logits stay under 256 MiB, where chunking only costs; else rows
// for 128 MiB chunks (261 at V = 128,256; bench_chunked_kd: 22% of the unchunked peak memory, 1.5x
// its speed).
int64_t auto_chunk_rows(int64_t rows, int64_t vocab);

}  // namespace lineage::distill
