// Benchmark task files, read into one shape: items of a context and candidate continuations.
//
//   multiple choice  JSONL {"query": str, "choices": [str, ...], "gold": int}  (ARC, PIQA, BoolQ
//                    as lm-evaluation-harness renders them); continuation = " " + choice
//   cloze            JSONL {"context": str, "continuation": str}  (LAMBADA); one candidate, scored
//                    by whether greedy decoding reproduces it exactly
//   schema           JSONL {"context_options": [str, ...], "continuation": str, "gold": int}
//                    (llm-foundry's schema tasks: Winograd, WinoGrande): the one continuation is
//                    scored after each context, as llm-foundry and lm-eval-harness's partial
//                    evaluation do; continuation = " " + continuation
//   hellaswag        llama.cpp's text format: 6 lines per item — context, gold index (0-3), four
//                    endings; continuation = " " + ending
// The kind is detected from the file (first non-empty line: a JSON object with "context_options",
// "choices" or "continuation", else the 6-line layout) and every line is checked; a bad line fails
// with the file name, the line number and the format the file was read as.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lineage::eval {

enum class TaskKind { kMultipleChoice, kCloze, kHellaSwag, kSchema };
const char* task_kind_name(TaskKind kind);  // "multiple_choice", "cloze", "hellaswag", "schema"

struct TaskItem {
  std::string context;
  std::vector<std::string> contexts;       // schema: each candidate's own context (else empty: `context`)
  std::vector<std::string> continuations;  // candidates, delimiter included
  std::vector<int64_t> choice_bytes;       // UTF-8 bytes of each candidate as the file gives it (acc_norm)
  int gold = 0;                            // index into continuations
  int64_t line = 0;                        // where the item starts in its file (1-based)
  const std::string& context_of(size_t candidate) const { return contexts.empty() ? context : contexts[candidate]; }
};

struct Task {
  std::string name;  // file name without extension
  std::string path;
  TaskKind kind = TaskKind::kMultipleChoice;
  std::vector<TaskItem> items;
};

// Reads a task file; `limit` > 0 keeps the first `limit` items.
Task load_task(const std::string& path, int64_t limit = 0);

}  // namespace lineage::eval
