// The data-parallel flags of train, distill and cache, and their --threads: launch (--nproc,
// --nnodes, --node-rank, --master-addr, --master-port) and the job's options (--dist-backend,
// --dist-timeout, ...).
// A process started with WORLD_SIZE > 1 in its environment (by --nproc, torchrun or a cluster
// launcher) is a worker and joins the job; one given --nproc starts and supervises the workers.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "commands.h"
#include "lineage/core/device.h"
#include "lineage/core/error.h"
#include "lineage/distill/data_parallel.h"
#include "lineage/distill/launch.h"
#include "lineage/model/cpu_decoder.h"

namespace lineage::cli {

struct ParallelFlags {
  distill::LaunchOptions launch;
  distill::ParallelOptions options;
  int threads = 0;  // CPU threads of this process (each worker's): OpenBLAS and libtorch together

  void add(CLI::App* sub, bool training) {
    sub->add_option("--threads", threads,
                    "CPU threads for OpenBLAS and libtorch together (each worker's, with --nproc); 0 = the libraries' "
                    "defaults (OMP_NUM_THREADS, else every core)")
        ->capture_default_str();
    const std::string g = "Data parallel";
    sub->add_option("--nproc", launch.nproc, "start N worker processes on this machine and supervise them (torchrun's --nproc-per-node)")
        ->group(g);
    sub->add_option("--nnodes", launch.nnodes, "machines in the job (each runs the same command with its --node-rank)")
        ->capture_default_str()->group(g);
    sub->add_option("--node-rank", launch.node_rank, "this machine's place among --nnodes, from 0")->capture_default_str()->group(g);
    sub->add_option("--master-addr", launch.master_addr, "address of node 0, where rank 0 hosts the rendezvous")
        ->capture_default_str()->group(g);
    sub->add_option("--master-port", launch.master_port, "rendezvous port on node 0 (default: a free port on one machine, 29500 on several)")
        ->group(g);
    sub->add_option("--dist-backend", options.backend, "gloo, nccl or auto (nccl for CUDA tensors when libtorch has it)")
        ->capture_default_str()->group(g);
    sub->add_option("--dist-timeout", options.timeout_s, "seconds a rank waits for the others before it fails naming the missing rank")
        ->capture_default_str()->group(g);
    if (!training) return;
    sub->add_option("--check-every", options.check_every, "steps between checks that every rank holds the same weights (0: only at the end)")
        ->capture_default_str()->group(g);
    sub->add_option("--bucket-mb", options.bucket_mb, "gradient all-reduce bucket size, MiB")->capture_default_str()->group(g);
    sub->add_flag("--overlap,!--no-overlap", options.overlap, "start each bucket's all-reduce during backward")->group(g);
  }

  // With --nproc: starts the workers, waits for them and returns true (failing when one failed).
  bool launched() const {
    distill::LaunchOptions l = launch;
    if (l.nproc == 0 && l.nnodes > 1 && !std::getenv("WORLD_SIZE")) l.nproc = 1;
    if (l.nproc == 0) return false;
    if (std::getenv("WORLD_SIZE") && std::string(std::getenv("WORLD_SIZE")) != "1")
      fail("--nproc given to a process that is already a worker (WORLD_SIZE is set): give one or the other");
    static const std::set<std::string> kLaunchFlags = {"--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port"};
    std::vector<std::string> args;
    const auto& all = program_args();
    for (size_t i = 0; i < all.size(); ++i) {
      const std::string& a = all[i];
      std::string name = a.substr(0, a.find('='));
      if (kLaunchFlags.count(name)) {
        if (a.find('=') == std::string::npos) ++i;  // its value
        continue;
      }
      args.push_back(a);
    }
    int rc = distill::launch_workers(l, args);
    if (rc != 0) fail("a worker failed (status {}); the others were stopped", rc);
    return true;
  }

  // Joins the job this process's environment describes (null for a single process); the job is
  // set as the library's data_parallel() while the returned holder lives.
  struct Joined {
    std::unique_ptr<distill::DataParallel> dp;
    ~Joined() {
      if (dp) distill::set_data_parallel(nullptr);
    }
  };
  // A bare "cuda" becomes "cuda:LOCAL_RANK": one GPU per worker, as torchrun's workers do.
  // Sets --threads first.
  std::unique_ptr<Joined> join(std::string& device) const {
    model::set_cpu_threads(threads);
    auto j = std::make_unique<Joined>();
    distill::WorldInfo w = distill::world_from_env();
    if (w.world_size > 1) {
      if (device == "cuda") device = "cuda:" + std::to_string(w.local_rank);
      j->dp = std::make_unique<distill::DataParallel>(w, options, parse_device(device));
      distill::set_data_parallel(j->dp.get());
    }
    return j;
  }
};

}  // namespace lineage::cli
