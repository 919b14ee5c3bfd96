// The flags of `lineage train` and `lineage distill`, registered from the library's recipe table
// (distill/recipe.h), plus --recipe FILE (a JSON object of the same options) and --resume RUN_DIR.
// Precedence: flags given on the command line > --recipe file > the run's recipe.json (resume) >
// defaults.
#pragma once

#include <CLI/CLI.hpp>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lineage/distill/recipe.h"

namespace lineage::cli {

struct RecipeFlags {
  std::string recipe_file, resume_dir;
  bool resume_previous = false;
  std::vector<std::pair<const distill::RecipeField*, CLI::Option*>> options;
  std::map<std::string, bool> bools;
  std::string command;

  void add(CLI::App* sub, bool distill) {
    sub->add_option("--recipe", recipe_file, "JSON file with any of these options (keys as the long flag names)");
    sub->add_option("--resume", resume_dir, "continue the stopped or killed run in RUN_DIR from its last checkpoint");
    sub->add_flag("--resume-previous", resume_previous,
                  "with --resume: when the latest checkpoint fails its SHA256SUMS check, use the newest older one that "
                  "passes (never done without this flag)");
    distill::Recipe defaults;
    for (const auto& f : distill::recipe_fields()) {
      if (!(distill ? f.distill : f.train)) continue;
      std::string name = std::string("--") + f.key;
      std::string def = f.get(defaults).dump();
      CLI::Option* o = nullptr;
      if (f.kind == distill::RecipeField::Kind::kBool) {
        o = sub->add_flag(name + ",!--no-" + f.key, bools[f.key], std::string(f.help) + " [default: " + def + "]");
      } else if (f.kind == distill::RecipeField::Kind::kList) {
        o = sub->add_option(name, f.help)->expected(1, -1)->type_name("FILE...");
      } else {
        o = sub->add_option(name, f.help);
        if (def != "\"\"" && def != "0") o->default_str(def);
      }
      options.emplace_back(&f, o);
    }
  }

  // The recipe these flags describe (distill::resolve_recipe); `resume` is set when --resume was given.
  distill::Recipe recipe(bool& resume) const {
    distill::RecipeSources src;
    src.recipe_file = recipe_file;
    src.resume_dir = resume_dir;
    resume = !resume_dir.empty();
    for (const auto& [f, o] : options) {
      if (o->count() == 0) continue;
      if (f->kind == distill::RecipeField::Kind::kBool) src.given[f->key] = bools.at(f->key);
      else if (f->kind == distill::RecipeField::Kind::kList) src.given[f->key] = o->as<std::vector<std::string>>();
      else src.given[f->key] = o->as<std::string>();
    }
    if (resume_previous && !resume) throw CLI::ValidationError("--resume-previous needs --resume RUN_DIR");
    auto r = distill::resolve_recipe(src);
    r.train.resume_previous = resume_previous;
    return r;
  }
};

// The command line as typed, for provenance, with secrets (--api-key) replaced by "***".
inline std::string joined_command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) {
    if (i) s += ' ';
    std::string a = argv[i];
    if (i > 0 && std::string(argv[i - 1]) == "--api-key") a = "***";
    if (a.rfind("--api-key=", 0) == 0) a = "--api-key=***";
    bool plain = !a.empty() && a.find_first_of(" \t\"'$\\") == std::string::npos;
    s += plain ? a : "'" + a + "'";
  }
  return s;
}

}  // namespace lineage::cli
