// Task files (formats in tasks.h). The " " between context and continuation is
// lm-evaluation-harness's target delimiter; it is left out where either side already has space.
#include "lineage/core/json.h"
#include "lineage/eval/tasks.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"

namespace lineage::eval {
namespace fs = std::filesystem;
using json = nlohmann::json;

const char* task_kind_name(TaskKind kind) {
  switch (kind) {
    case TaskKind::kMultipleChoice: return "multiple_choice";
    case TaskKind::kCloze: return "cloze";
    case TaskKind::kHellaSwag: return "hellaswag";
    case TaskKind::kSchema: return "schema";
  }
  return "?";
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

std::string with_delimiter(const std::string& context, const std::string& continuation) {
  if (continuation.empty() || context.empty() || is_space(context.back()) || is_space(continuation.front()))
    return continuation;
  return " " + continuation;
}

std::string strip_cr(std::string s) {
  if (!s.empty() && s.back() == '\r') s.pop_back();
  return s;
}

std::string string_field(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) fail("{}: missing field \"{}\"", where, key);
  if (!j[key].is_string()) fail("{}: field \"{}\" must be a string, found {}", where, key, j[key].type_name());
  return j[key].get<std::string>();
}

// How a JSONL task's lines are read, for messages.
std::string format_of(TaskKind kind) {
  switch (kind) {
    case TaskKind::kMultipleChoice: return "multiple choice {\"query\", \"choices\", \"gold\"}";
    case TaskKind::kCloze: return "cloze {\"context\", \"continuation\"}";
    case TaskKind::kSchema: return "llm-foundry schema {\"context_options\", \"continuation\", \"gold\"}";
    case TaskKind::kHellaSwag: break;
  }
  return "HellaSwag text (6 lines per item)";
}

int gold_field(const json& j, size_t candidates, const std::string& where) {
  if (!j.contains("gold")) fail("{}: missing field \"gold\"", where);
  if (!j["gold"].is_number_integer()) fail("{}: \"gold\" must be an integer index", where);
  int64_t gold = j["gold"].get<int64_t>();
  if (gold < 0 || gold >= static_cast<int64_t>(candidates))
    fail("{}: \"gold\" is {}, out of range for {} choices (0 to {})", where, gold, candidates, candidates - 1);
  return static_cast<int>(gold);
}

TaskItem parse_json_item(const json& j, TaskKind kind, const std::string& where) {
  TaskItem item;
  if (kind == TaskKind::kSchema) {
    const json& options = j.contains("context_options") ? j["context_options"] : json();
    if (!options.is_array() || options.size() < 2)
      fail("{}: \"context_options\" must be a list of at least 2 strings", where);
    std::string c = string_field(j, "continuation", where);
    if (c.empty()) fail("{}: \"continuation\" is empty", where);
    for (const auto& o : options) {
      if (!o.is_string()) fail("{}: \"context_options\" must be a list of strings, found a {}", where, o.type_name());
      item.contexts.push_back(o.get<std::string>());
      item.continuations.push_back(with_delimiter(item.contexts.back(), c));
      item.choice_bytes.push_back(static_cast<int64_t>(c.size()));
    }
    item.gold = gold_field(j, item.contexts.size(), where);
    return item;
  }
  if (kind == TaskKind::kCloze) {
    item.context = string_field(j, "context", where);
    std::string c = string_field(j, "continuation", where);
    if (c.empty()) fail("{}: \"continuation\" is empty", where);
    item.continuations = {with_delimiter(item.context, c)};
    item.choice_bytes = {static_cast<int64_t>(c.size())};
    return item;
  }
  item.context = string_field(j, "query", where);
  if (!j.contains("choices")) fail("{}: missing field \"choices\"", where);
  if (!j["choices"].is_array()) fail("{}: \"choices\" must be a list of strings", where);
  if (j["choices"].empty()) fail("{}: \"choices\" is empty, expected at least 2 choices", where);
  for (const auto& c : j["choices"]) {
    if (!c.is_string()) fail("{}: \"choices\" must be a list of strings, found a {}", where, c.type_name());
    item.continuations.push_back(with_delimiter(item.context, c.get<std::string>()));
    item.choice_bytes.push_back(static_cast<int64_t>(c.get<std::string>().size()));
  }
  item.gold = gold_field(j, item.continuations.size(), where);
  return item;
}

}  // namespace

Task load_task(const std::string& path, int64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open task file '{}'", path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(strip_cr(line));
  Task task;
  task.path = path;
  task.name = fs::path(path).stem().string();
  size_t first = 0;
  while (first < lines.size() && lines[first].find_first_not_of(" \t") == std::string::npos) ++first;
  if (first == lines.size()) fail("task file '{}' is empty", path);

  const std::string& head = lines[first];
  if (!head.empty() && head.front() == '{') {
    json j = parse_json_or_discarded(head);
    if (j.is_discarded() || !j.is_object())
      fail("{}:{}: not valid JSON (a task file is JSONL with one object per line)", path, first + 1);
    if (j.contains("context_options")) task.kind = TaskKind::kSchema;
    else if (j.contains("choices")) task.kind = TaskKind::kMultipleChoice;
    else if (j.contains("continuation")) task.kind = TaskKind::kCloze;
    else
      fail("{}:{}: cannot tell the task kind: expected {{\"query\", \"choices\", \"gold\"}} (multiple choice), "
           "{{\"context\", \"continuation\"}} (cloze) or {{\"context_options\", \"continuation\", \"gold\"}} "
           "(llm-foundry schema)",
           path, first + 1);
    for (size_t i = first; i < lines.size(); ++i) {
      if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
      const std::string where = fmt::format("{}:{} (read as {})", path, i + 1, format_of(task.kind));
      json item_json = parse_json_or_discarded(lines[i]);
      if (item_json.is_discarded() || !item_json.is_object()) fail("{}: not a valid JSON object", where);
      TaskItem item = parse_json_item(item_json, task.kind, where);
      item.line = static_cast<int64_t>(i + 1);
      task.items.push_back(std::move(item));
      if (limit > 0 && static_cast<int64_t>(task.items.size()) >= limit) break;
    }
    return task;
  }

  // llama.cpp's HellaSwag text: context, gold, 4 endings.
  task.kind = TaskKind::kHellaSwag;
  size_t n = lines.size();
  while (n > 0 && lines[n - 1].empty()) --n;
  if (n % 6 != 0)
    fail("'{}': {} lines is not a multiple of 6 (the HellaSwag text format has 6 lines per item: context, gold "
         "index, 4 endings); a JSONL task must start with '{{'",
         path, n);
  for (size_t i = 0; i < n; i += 6) {
    TaskItem item;
    item.line = static_cast<int64_t>(i + 1);
    item.context = lines[i];
    const std::string& g = lines[i + 1];
    if (g.size() != 1 || g[0] < '0' || g[0] > '3')
      fail("{}:{}: expected the gold ending's index (0 to 3), found '{}'", path, i + 2, g.substr(0, 40));
    item.gold = g[0] - '0';
    for (size_t e = 0; e < 4; ++e) {
      if (lines[i + 2 + e].empty()) fail("{}:{}: ending {} is empty", path, i + 3 + e, e);
      item.continuations.push_back(with_delimiter(item.context, lines[i + 2 + e]));
      item.choice_bytes.push_back(static_cast<int64_t>(lines[i + 2 + e].size()));
    }
    task.items.push_back(std::move(item));
    if (limit > 0 && static_cast<int64_t>(task.items.size()) >= limit) break;
  }
  return task;
}

}  // namespace lineage::eval
