// The lineage binary's verbs. Each cmd_<verb>.cpp registers one subcommand: it parses flags and
// calls the library, nothing more.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace lineage::cli {

using Run = std::function<void()>;

// Each adds its subcommand to `app` and returns what runs when it is chosen.
Run add_generate(CLI::App& app);
Run add_convert(CLI::App& app);
Run add_prune(CLI::App& app);
Run add_info(CLI::App& app);
Run add_train(CLI::App& app);
Run add_distill(CLI::App& app);
Run add_cache(CLI::App& app);
Run add_eval(CLI::App& app);
Run add_report(CLI::App& app);
Run add_serve(CLI::App& app);
Run add_keygen(CLI::App& app);
Run add_detect(CLI::App& app);
Run add_trace(CLI::App& app);
Run add_verify(CLI::App& app);
Run add_monitor(CLI::App& app);
Run add_provenance(CLI::App& app);
Run add_tokenize(CLI::App& app);

// The command line as typed (main sets it), for provenance records.
const std::string& command_line();
// argv[1..] as given (main sets it): what --nproc starts each worker with.
const std::vector<std::string>& program_args();

}  // namespace lineage::cli
