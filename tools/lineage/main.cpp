// lineage: distill, evaluate, serve and protect language models. One subcommand per verb.
#include <torch/torch.h>

#include <iostream>
#include <map>

#include "commands.h"
#include "lineage/core/allocator.h"
#include "lineage/core/error.h"
#include "lineage/core/threads.h"
#include "recipe_flags.h"

namespace lineage::cli {
static std::string g_command_line;
static std::vector<std::string> g_program_args;
const std::string& command_line() { return g_command_line; }
const std::vector<std::string>& program_args() { return g_program_args; }
}  // namespace lineage::cli

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  lineage::tune_allocator();
  CLI::App app{"lineage: knowledge distillation of language models, in one native binary"};
  app.set_version_flag("--version", "lineage " LINEAGE_VERSION);
  app.require_subcommand(1);
  std::map<std::string, lineage::cli::Run> runs;
  runs["generate"] = lineage::cli::add_generate(app);
  runs["convert"] = lineage::cli::add_convert(app);
  runs["prune"] = lineage::cli::add_prune(app);
  runs["info"] = lineage::cli::add_info(app);
  runs["train"] = lineage::cli::add_train(app);
  runs["distill"] = lineage::cli::add_distill(app);
  runs["cache"] = lineage::cli::add_cache(app);
  runs["eval"] = lineage::cli::add_eval(app);
  runs["report"] = lineage::cli::add_report(app);
  runs["serve"] = lineage::cli::add_serve(app);
  runs["keygen"] = lineage::cli::add_keygen(app);
  runs["detect"] = lineage::cli::add_detect(app);
  runs["trace"] = lineage::cli::add_trace(app);
  runs["verify"] = lineage::cli::add_verify(app);
  runs["monitor"] = lineage::cli::add_monitor(app);
  runs["provenance"] = lineage::cli::add_provenance(app);
  runs["tokenize"] = lineage::cli::add_tokenize(app);
  lineage::cli::g_command_line = lineage::cli::joined_command_line(argc, argv);
  lineage::cli::g_program_args.assign(argv + 1, argv + argc);
  // A worker of a data-parallel job names its rank in its errors.
  std::string who = "lineage";
  if (const char* rank = std::getenv("RANK"); rank && std::getenv("WORLD_SIZE") && std::string(std::getenv("WORLD_SIZE")) != "1")
    who = std::string("lineage [rank ") + rank + "]";
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto* sub : app.get_subcommands()) runs.at(sub->get_name())();
  } catch (const lineage::Error& e) {
    std::cerr << who << ": " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << who << ": " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << who << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
