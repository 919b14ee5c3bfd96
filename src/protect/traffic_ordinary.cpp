// Ordinary API users for the traffic simulator: people chatting, students, power users, the users
// of IDE agents whose system prompt asks for step-by-step thinking, calibration researchers who
// ask for log-probabilities of generated text, evaluation harnesses, enterprise integrations.
#include <algorithm>
#include <fmt/format.h>

#include "traffic_kinds.h"

namespace lineage::protect::sim {

namespace {
constexpr int64_t kStartMs = 1793491200000;  // 2026-11-01T00:00:00Z
constexpr int64_t kDayMs = 86400000;
}  // namespace

// People in a chat app or a script of their own: a few sessions, conversations that go on.
void World::casual(const std::string& key, bool student) {
  label(key, student ? "student" : "casual", "");
  const int n = student ? uniform(10, 150) : std::min(120, 2 + static_cast<int>(expo(25)));
  std::vector<std::string> ips = {residential()};
  const int extra = chance(0.15) ? uniform(2, 6) : uniform(0, 1);  // phones move between networks
  for (int i = 0; i < extra; ++i) ips.push_back(residential());
  const std::string agent = chance(0.85) ? browser() : sdk();
  const double follow_up = real(0.05, 0.6), homework = student ? real(0.2, 0.8) : real(0, 0.06);
  const int max_tokens = chance(0.5) ? 0 : uniform(256, 2048);
  const size_t favourite = domain();
  std::vector<Turn> conv;
  for (int64_t ms : human_times(n, 0, days_ - 1, uniform(-8, 9))) {
    if (conv.empty() || conv.size() >= 8 || !chance(follow_up)) conv.clear();
    const size_t d = chance(0.5) ? favourite : domain();
    std::string text = chance(homework) ? content_.homework(d) : chance(0.3) ? content_.chatter() : content_.question(d);
    conv.push_back({text, static_cast<int64_t>(expo(student ? 350 : 250)) + 10});
    emit(key, ms, ips[static_cast<size_t>(uniform(0, static_cast<int>(ips.size()) - 1))], agent,
         chat(conv, "", max_tokens, chance(0.6) ? -1 : real(0.2, 1.0)), conv.back().completion);
  }
}

// Heavy users of the API for their own work: hundreds to thousands of requests, long conversations.
void World::power(const std::string& key) {
  label(key, "power", "");
  const int n = uniform(15, 200) * days_;
  const std::vector<std::string> ips = {residential(), residential()};
  const std::string agent = chance(0.5) ? browser() : sdk();
  const double follow_up = real(0.2, 0.8), reasoning = real(0, 0.15);
  const int tz = uniform(-8, 9);
  std::vector<Turn> conv;
  for (int64_t ms : human_times(n, 0, days_ - 1, tz)) {
    if (conv.empty() || conv.size() >= 12 || !chance(follow_up)) conv.clear();
    const size_t d = domain();
    const double r = real();
    std::string text = r < reasoning ? content_.homework(d) : r < 0.4 ? content_.instruction(d) : r < 0.6 ? content_.code_question()
                                                                                                    : content_.question(d);
    conv.push_back({text, static_cast<int64_t>(expo(400)) + 20});
    emit(key, ms, ips[chance(0.9) ? 0 : 1], agent, chat(conv, "", chance(0.5) ? 0 : 4096, real(0, 1)), conv.back().completion);
  }
}

// One IDE agent product and its users. The product's instructions ask for step-by-step thinking
// (as public coding agents do), as a system message or in front of the user's text.
void World::ide_product(int first, int users) {
  static const std::vector<std::string> kNames = {"CodePilot", "DevMate", "Refactorly", "StackSage", "BuildBuddy", "Cursorial"};
  const std::string name = kNames[static_cast<size_t>(uniform(0, static_cast<int>(kNames.size()) - 1))];
  const std::string instructions = fmt::format(
      "You are {}, an expert coding assistant inside the editor. Think step by step and explain your reasoning before "
      "you write code. Show your work for every change, keep answers focused on the user's repository.",
      name);
  const bool in_system = chance(0.7);
  const int major = uniform(1, 3);
  for (int u = 0; u < users; ++u) {
    const std::string key = fmt::format("ide-{:05d}", first + u);
    label(key, "ide_agent", "");
    const std::string agent = fmt::format("{}/{}.{}.{} (vscode; {})", name, major, uniform(0, 12), uniform(0, 30),
                                          chance(0.5) ? "darwin" : chance(0.5) ? "win32" : "linux");
    const std::string home = residential(), office = residential();
    const int n = days_ * std::min(250, 3 + static_cast<int>(expo(40)));
    const double follow_up = real(0.4, 0.9);
    std::vector<Turn> conv;
    for (int64_t ms : human_times(n, 0, days_ - 1, uniform(-8, 9))) {
      if (conv.empty() || conv.size() >= 10 || !chance(follow_up)) conv.clear();
      std::string text = content_.code_question();
      if (!in_system && conv.empty()) text = instructions + "\n\n" + text;
      conv.push_back({text, static_cast<int64_t>(expo(450)) + 30});
      emit(key, ms, chance(0.7) ? home : office, agent, chat(conv, in_system ? instructions : "", uniform(2048, 8192), real(0, 0.3)),
           conv.back().completion);
    }
  }
}

// Calibration studies: the same questions sampled several times with the log-probabilities of
// what the model writes, from a university address, in a few runs.
void World::calibration(const std::string& key) {
  label(key, "calibration", "");
  const std::string ip = fmt::format("128.{}.{}.{}", uniform(0, 255), uniform(0, 255), uniform(2, 250)), agent = sdk();
  const size_t d = domain();
  std::vector<std::string> questions(static_cast<size_t>(uniform(20, 200)));
  for (auto& q : questions) q = content_.benchmark_context(chance(0.5) ? d : domain());
  const bool use_n = chance(0.5);
  const int samples = uniform(3, 10), top = uniform(1, 20), max_tokens = uniform(16, 128);
  const double temperature = real(0.7, 1.0);
  const int runs = uniform(1, 3);
  for (int run = 0; run < runs; ++run) {
    int64_t ms = kStartMs + uniform(0, days_ - 1) * kDayMs + uniform(8, 20) * int64_t{3600000};
    for (const auto& q : questions)
      for (int s = 0; s < (use_n ? 1 : samples); ++s) {
        json body = {{"model", "teacher"}, {"prompt", q}, {"max_tokens", max_tokens}, {"temperature", temperature}, {"logprobs", top}};
        if (use_n) body["n"] = samples;
        ms += static_cast<int64_t>(1000 * real(0.3, 3));
        emit(key, ms, ip, agent, body, static_cast<int64_t>(expo(max_tokens / 2.0)) + 1);
      }
  }
}

// An evaluation harness (lm-evaluation-harness style) run by a lab: log-likelihood of each answer
// choice after the same context (echo, no generation), and now and then a generative
// chain-of-thought task ("Let's think step by step"). Runs repeat over the same items.
void World::eval_harness(int first, int keys) {
  const int subnet = uniform(0, 10000);
  const size_t d = domain();
  struct Item {
    std::string context;
    std::vector<std::string> choices;
  };
  std::vector<Item> items(static_cast<size_t>(uniform(30, 300)));
  const int choices = uniform(2, 5);
  for (auto& it : items) {
    it.context = content_.benchmark_context(chance(0.6) ? d : domain());
    for (int c = 0; c < choices; ++c) it.choices.push_back(content_.answer_choice(d));
  }
  const std::string shots = "Q: " + content_.question(d) + "\nA: Let's think step by step. " + content_.passage(2) + "\n\n";
  for (int k = 0; k < keys; ++k) {
    const std::string key = fmt::format("eval-{:05d}", first + k);
    label(key, "eval_harness", "");
    const std::string ip = datacenter(subnet), agent = sdk();
    const int runs = uniform(1, 3);
    for (int run = 0; run < runs; ++run) {
      int64_t ms = kStartMs + uniform(0, days_ - 1) * kDayMs + uniform(0, 23) * int64_t{3600000};
      const bool cot = chance(0.3);
      for (const auto& it : items) {
        if (cot) {
          json body = {{"model", "teacher"}, {"prompt", shots + "Q: " + it.context + "\nA: Let's think step by step."},
                       {"max_tokens", 256}, {"temperature", 0}};
          emit(key, ms += static_cast<int64_t>(1000 * real(0.5, 4)), ip, agent, body, static_cast<int64_t>(expo(150)) + 20);
          continue;
        }
        for (const auto& c : it.choices) {
          json body = {{"model", "teacher"}, {"prompt", it.context + c}, {"max_tokens", chance(0.5) ? 0 : 1},
                       {"echo", true}, {"logprobs", chance(0.5) ? 1 : 5}, {"temperature", 0}};
          emit(key, ms += static_cast<int64_t>(1000 * real(0.05, 0.6)), ip, agent, body, 0);
        }
      }
    }
  }
}

// One company's integration deployed over many keys: one template, the company's addresses and
// SDK, business hours on weekdays, short deterministic answers.
void World::enterprise(int first, int keys) {
  static const std::vector<std::string> kOrgs = {"Acme Logistics", "Northwind Retail", "Globex Insurance", "Initech Support", "Umbrella Travel"};
  const std::string org = kOrgs[static_cast<size_t>(uniform(0, static_cast<int>(kOrgs.size()) - 1))];
  const std::string tmpl = fmt::format("You are the support assistant of {}. Summarize the ticket below in two sentences "
                                       "and propose a reply.\n\nTicket: ", org);
  const int subnet = uniform(0, 10000), tz = uniform(-8, 9);
  const std::string agent = sdk();
  const bool system = chance(0.5);
  for (int k = 0; k < keys; ++k) {
    const std::string key = fmt::format("enterprise-{:05d}", first + k);
    label(key, "enterprise", "");
    const std::string ip = datacenter(subnet);
    const int per_day = uniform(10, 200);
    for (int day = 0; day < days_; ++day) {
      if (day % 7 >= 5) continue;  // weekends off
      int64_t ms = kStartMs + day * kDayMs + (9 - tz) * int64_t{3600000};
      for (int i = 0; i < per_day; ++i) {
        ms += static_cast<int64_t>(1000 * expo(8.0 * 3600 / per_day));
        std::vector<Turn> conv = {{system ? content_.ticket() : tmpl + content_.ticket(), static_cast<int64_t>(expo(90)) + 20}};
        emit(key, ms, ip, agent, chat(conv, system ? tmpl : "", uniform(150, 400), real(0, 0.3)), conv.back().completion);
      }
    }
  }
}

}  // namespace lineage::protect::sim
