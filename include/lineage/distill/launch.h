// Where this process stands in a data-parallel job, and the launcher that starts one: torchrun's
// conventions (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT in each
// worker's environment), so that torchrun itself, Slurm wrappers and Kubernetes operators can
// start Lineage's workers, and `lineage distill --nproc N` starts them alone. Free of libtorch.
#pragma once
#include <string>
#include <vector>

namespace lineage::distill {

// One worker's place. world_size 1 is a plain single-process run.
struct WorldInfo {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// How the workers talk and how long they wait for each other (flags of train/distill/cache).
struct ParallelOptions {
  std::string backend = "auto";  // gloo, nccl, or auto (nccl for CUDA tensors when libtorch has it)
  double timeout_s = 300;        // a rank that dies or hangs ends the others after this long
  int64_t check_every = 50;      // steps between checks that the weights agree on every rank (0: off)
  double bucket_mb = 4;          // gradient bucket size for the all-reduce
  bool overlap = true;           // start each bucket's all-reduce from backward, as soon as it is ready
};

// What --nproc, --nnodes, --node-rank, --master-addr and --master-port ask for.
struct LaunchOptions {
  int nproc = 0;  // workers on this machine; 0: this process is a worker (or a single run)
  int nnodes = 1, node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: a free port when nnodes is 1, else 29500
};

// From the environment (RANK, WORLD_SIZE, ...); world_size 1 when WORLD_SIZE is unset. Fails,
// naming the variable, on a value that is not a number in range or on missing companions.
WorldInfo world_from_env();

// A TCP port on 127.0.0.1 that nobody listens on now (the kernel's pick): a one-machine job's
// rendezvous port.
int free_local_port();

// Starts `opts.nproc` copies of this program with `args` (argv without --nproc and the launch
// flags), each with its RANK etc. set, and supervises them: they share this terminal (rank 0
// alone shows progress; errors name their rank); when one fails the others are stopped (SIGTERM,
// then SIGKILL after 10 s), and SIGINT/SIGTERM to the launcher go on to every worker.
// Returns the exit status for the launcher: 0 when all succeeded, else the first failure's.
int launch_workers(const LaunchOptions& opts, const std::vector<std::string>& args);

}  // namespace lineage::distill
