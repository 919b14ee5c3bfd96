// The learned monitor model Lineage ships (see shipped_monitor_model in
// include/lineage/protect/monitor.h). Written by scripts/fit_monitor.sh — do not edit by hand.
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/protect/monitor.h"

namespace lineage::protect {

namespace {
const char* const kShippedModel = R"json({
  "bias": -2.012850110007005,
  "features": [
    "log_requests",
    "log_completion_day",
    "log_completion_req",
    "log_prompt_req",
    "long_answers",
    "rotation",
    "log_clients",
    "log_agents",
    "hours_of_day",
    "gap_log_mean",
    "gap_log_sd",
    "follow_up",
    "new_history",
    "tool_steps",
    "logprobs",
    "many_samples",
    "reasoning",
    "system_variety",
    "novelty",
    "head_template",
    "tail_template",
    "log_own_bytes",
    "vocabulary_breadth",
    "log_turns_per_conversation"
  ],
  "kind": "logistic_regression",
  "mean": [
    4.618085923071645,
    9.6412843389536,
    6.058760062954692,
    6.116920384713351,
    0.3404155205182429,
    0.15080394727457808,
    1.2599354852809939,
    0.20997277978294351,
    0.5052175191064071,
    4.949976056214337,
    1.9570976936953282,
    0.48856603040993646,
    0.09048269116598362,
    0.09771338979941027,
    0.022529999654182658,
    0.00851602690183361,
    0.018873409888428554,
    0.08866313506997729,
    0.819167100566852,
    0.17533278759503412,
    0.15369906398213312,
    4.410280880515299,
    0.8587310487666328,
    1.2895629373028914
  ],
  "scale": [
    1.8835261580242568,
    1.916025773023749,
    0.8173610687764349,
    0.7973398692846023,
    0.25020714123325477,
    0.2525458168041729,
    1.2489392602549336,
    0.7063513353820693,
    0.34583102845999425,
    1.8175813687912579,
    0.76795390383722,
    0.285455282555003,
    0.1624241126472327,
    0.22174517751888564,
    0.14724062713209107,
    0.08228604003846429,
    0.09743894624925166,
    0.14573322350592194,
    0.22890914198902412,
    0.19003621084308808,
    0.17655012221108607,
    0.99959136523507,
    0.1114600539544109,
    0.5041781736591171
  ],
  "threshold": 0.0,
  "trained_on": "dev-a.features.jsonl, dev-b.features.jsonl",
  "training_fpr": 0.007075471698113208,
  "training_recall": 0.9790209790209791,
  "weights": [
    0.12044738916994333,
    1.0982914828883692,
    0.8289160362904221,
    0.11959441363288123,
    0.7246815690471216,
    0.8458751469537622,
    0.8425033793937404,
    -0.7128738780278021,
    1.1317570563590567,
    -0.5829636339604883,
    -0.3427894960138706,
    0.6116992861763177,
    0.6562214264104546,
    0.42236857973131425,
    0.08464338860969424,
    -0.018088528224464166,
    -0.09402468526013882,
    0.5300578580174753,
    0.3230935495747966,
    -0.49327522608171104,
    0.21034730833950332,
    0.6081784195309075,
    0.9225195614669578,
    -0.7095916691596189
  ]
})json";
}  // namespace

const LearnedModel& shipped_monitor_model() {
  static const LearnedModel model = [] {
    if (std::string(kShippedModel).empty()) fail("this lineage was built without a learned monitor model (scripts/fit_monitor.sh)");
    return LearnedModel::from_json(nlohmann::json::parse(kShippedModel), "the shipped monitor model");
  }();
  return model;
}

}  // namespace lineage::protect
