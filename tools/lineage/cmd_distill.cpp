// lineage distill: train a student on what a teacher says (the main job).
#include <cstdlib>
#include <iostream>

#include "commands.h"
#include "lineage/eval/report.h"
#include "lineage/distill/jobs.h"
#include "lineage/protect/signing.h"
#include "parallel_flags.h"
#include "recipe_flags.h"

namespace lineage::cli {

Run add_distill(CLI::App& app) {
  auto* sub = app.add_subcommand("distill", "distill a teacher into a smaller student");
  auto flags = std::make_shared<RecipeFlags>();
  flags->add(sub, /*distill=*/true);
  auto api_key = std::make_shared<std::string>();
  auto sign_key = std::make_shared<std::string>();
  auto parallel = std::make_shared<ParallelFlags>();
  parallel->add(sub, /*training=*/true);
  sub->add_option("--sign-key", *sign_key, "sign lineage.json and the student's files with this ed25519 key (lineage keygen --sign)");
  sub->add_option("--api-key", *api_key, "HTTP teacher: API key (default: $LINEAGE_API_KEY; never written to the run)");
  sub->footer(
      "Examples:\n"
      "  lineage distill --teacher T.gguf --data corpus.txt --dim 96 --layers 4 --heads 4 --steps 300 --out runs/s\n"
      "  lineage distill --teacher T.gguf --data d.jsonl --mode offline --cache runs/cache --loss jsd --beta 0.5 ...\n"
      "  lineage distill --teacher http://127.0.0.1:8080/v1 --tokenizer tok.gguf --top-k 20 --tail-samples 0 ...\n"
      "  lineage distill --resume runs/s          (continue a stopped or killed run)\n"
      "  lineage distill --nproc 2 ...             (two data-parallel workers on this machine)\n"
      "  lineage distill --nproc 1 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 ...   (and node-rank 1 on the other)");
  return [flags, api_key, sign_key, parallel] {
    if (!sign_key->empty() && !std::filesystem::is_regular_file(*sign_key))
      throw CLI::ValidationError("--sign-key", "'" + *sign_key + "' is not a key file (make one with lineage keygen --sign FILE)");
    bool resume = false;
    distill::Recipe r = flags->recipe(resume);
    if (parallel->launched()) return;
    auto job = parallel->join(r.device);
    distill::run_distill(r, command_line(), resume, *api_key);
    if (job->dp && !job->dp->writes()) return;  // rank 0 signs and reports
    if (!std::filesystem::exists(std::filesystem::path(r.out) / "student.gguf")) return;  // stopped early
    if (!sign_key->empty()) std::cout << "signed: " << protect::sign_run(r.out, *sign_key).string() << "\n";
    eval::ReportOptions ro;
    ro.run_dir = r.out;
    std::cout << "report: " << eval::write_report(ro) << "\n";
  };
}

}  // namespace lineage::cli
