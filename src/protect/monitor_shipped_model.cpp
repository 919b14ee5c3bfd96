// The learned monitor model Lineage ships (see shipped_monitor_model in
// include/lineage/protect/monitor.h). Written by scripts/fit_monitor.sh — do not edit by hand.
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/protect/monitor.h"

namespace lineage::protect {

namespace {
const char* const kShippedModel = R"json({
  "bias": -2.207774245750728,
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
    "log_turns_per_conversation",
    "capability_breadth",
    "capability_entropy"
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
    1.2895629373028914,
    0.18206484873151543,
    0.4601997194148952
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
    0.5041781736591171,
    0.18375916883351984,
    0.2859232734578544
  ],
  "threshold": 0.4760709178218033,
  "trained_on": "dev-a.features.jsonl, dev-b.features.jsonl",
  "training_fpr": 0.0,
  "training_recall": 0.9790209790209791,
  "weights": [
    0.023276810540005983,
    0.9368625216566739,
    0.7549600698974062,
    0.015973130348323393,
    0.7293858043854382,
    1.0255711868262,
    0.8532706915614894,
    -0.6710732129352752,
    1.1064828482015907,
    -0.5035673841180943,
    -0.3024437199849027,
    0.6087825800540747,
    0.7087884563504366,
    0.43270340569630805,
    0.079946848886162,
    -0.020034459889092606,
    -0.1201048962416704,
    0.6815617484782349,
    0.298546530543994,
    -0.27513838187968015,
    0.0720327708268006,
    0.3565974170803045,
    0.7862729781717389,
    -0.5376599177235285,
    0.4903796223566814,
    0.655505653925962
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
