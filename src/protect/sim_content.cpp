// Prompt text for the traffic simulator. See sim_content.h.
#include "sim_content.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "lineage/core/json.h"
#include "lineage/core/error.h"

namespace lineage::protect::sim {

namespace {

// Domains and their terms: what prompts are about, and what a campaign's "capability targets" are.
const std::vector<std::vector<std::string>> kDomains = {
    {"derivative", "integral", "eigenvalue", "matrix", "limit", "series", "polynomial", "vector space", "gradient", "taylor expansion", "determinant", "manifold"},
    {"enzyme", "mitochondria", "protein folding", "gene expression", "cell membrane", "photosynthesis", "ribosome", "immune response", "neuron", "dna replication", "antibody", "hormone"},
    {"recursion", "hash table", "binary tree", "mutex", "garbage collector", "linked list", "closure", "iterator", "compiler", "memory leak", "race condition", "sql join"},
    {"contract", "tort", "liability", "copyright", "precedent", "jurisdiction", "arbitration", "patent", "negligence", "statute", "due process", "trademark"},
    {"inflation", "interest rate", "bond yield", "supply curve", "gdp", "tariff", "monopoly", "exchange rate", "recession", "elasticity", "index fund", "balance sheet"},
    {"entropy", "momentum", "quantum state", "thermodynamics", "relativity", "electric field", "wave function", "friction", "magnetism", "optics", "semiconductor", "pendulum"},
    {"sourdough", "risotto", "fermentation", "braising", "emulsion", "caramelization", "knife skills", "spice blend", "pastry dough", "stock", "marinade", "sous vide"},
    {"french revolution", "roman empire", "silk road", "cold war", "renaissance", "industrial revolution", "ottoman empire", "meiji restoration", "printing press", "magna carta", "crusades", "apartheid"},
    {"sonnet", "metaphor", "narrator", "plot twist", "haiku", "protagonist", "allegory", "free verse", "dialogue", "foreshadowing", "essay structure", "character arc"},
    {"titration", "covalent bond", "reaction rate", "catalyst", "oxidation", "molar mass", "isomer", "ph scale", "electrolysis", "polymer", "buffer solution", "stoichiometry"},
    {"hypothesis test", "p-value", "regression", "bayes rule", "variance", "confidence interval", "markov chain", "sampling bias", "likelihood", "bootstrap", "anova", "outlier"},
    {"blood pressure", "vaccine", "antibiotic", "diabetes", "cholesterol", "sleep apnea", "migraine", "physical therapy", "allergy", "dehydration", "vitamin d", "heart rate"},
    {"marathon", "chess opening", "guitar chord", "watercolor", "knitting pattern", "bonsai", "photography", "rock climbing", "sourdough starter", "birdwatching", "pottery", "sailing"},
    {"plate tectonics", "glacier", "hurricane", "volcano", "ocean current", "carbon cycle", "drought", "coral reef", "permafrost", "monsoon", "erosion", "aquifer"},
    {"neural network", "transformer", "overfitting", "backpropagation", "embedding", "tokenizer", "learning rate", "dropout", "attention head", "reinforcement learning", "decision tree", "clustering"},
    {"kant", "utilitarianism", "free will", "stoicism", "existentialism", "social contract", "epistemology", "virtue ethics", "nihilism", "dualism", "pragmatism", "categorical imperative"}};

const std::vector<std::string> kQuestions = {
    "Can you explain {} to me?", "what is {} exactly", "How does {} actually work?", "Give me a quick overview of {}",
    "I keep hearing about {} - what's the big deal?", "Explain {} like I'm five", "What are common misconceptions about {}?",
    "How would you teach {} to a beginner?", "Compare {} and {} for me", "Why does {} matter in practice?",
    "Write a short summary of {} for my notes", "whats the difference between {} and {}", "Is it true that {} is overrated?",
    "Give three examples of {}", "Quick question about {}: where do I start?", "What's a good analogy for {}?"};
const std::vector<std::string> kChatter = {
    "write a birthday message for my sister", "tell me a joke about {}", "help me write an email to my landlord about {}",
    "suggest a name for a cat", "what should I cook tonight with {}", "plan a three day trip to lisbon",
    "rewrite this to sound more polite: {}", "give me a motivational quote", "translate 'good morning' into japanese",
    "what are some fun things to do this weekend", "draft a text saying I'll be late", "recommend a podcast about {}"};
const std::vector<std::string> kCode = {
    "Why does this function throw a null pointer exception? {}", "Refactor this loop to use a {}: {}",
    "Add unit tests for the {} module", "Explain this stack trace: {}", "How do I fix the {} in this code? {}",
    "Write a function that implements a {}", "Review this diff and point out bugs: {}", "Convert this {} code to rust: {}",
    "The build fails with an undefined reference to {}. What's wrong?", "Make this {} thread safe: {}"};
const std::vector<std::string> kFiller = {
    "the", "value", "returns", "when", "input", "is", "empty", "after", "update", "config", "user", "list", "index",
    "string", "null", "error", "call", "on", "line", "42", "handler", "request", "timeout", "cache", "key", "map", "count",
    "data", "file", "path", "token", "loop", "result", "state", "buffer", "client", "server", "query", "field", "table"};
// Ways of asking for a model's reasoning. The first few are the usual words; the later ones say
// the same thing without them, as a campaign that paraphrases would.
const std::vector<std::string> kReasoning = {
    "Solve this {} problem and explain your reasoning step by step: {}", "Think step by step about {}: {}",
    "Show your work: {} ({})", "Walk me through the {} problem below, one step at a time. {}",
    "Before answering, reason carefully about {}. {}", "Give a detailed worked solution on {}: {}",
    "Lay out the logic behind this {} question piece by piece: {}", "How would an expert in {} get from the premises to the answer here? {}",
    "I want every intermediate stage, nothing skipped, for this {} task: {}", "Unpack {} slowly, each inference in turn, then conclude: {}",
    "Derive the answer to this {} exercise from first principles and narrate each move: {}",
    "Treat this {} puzzle like a proof and justify each line: {}", "Break down the {} question into parts and resolve them in order: {}",
    "What chain of deductions answers this {} question? {}"};
const std::vector<std::string> kHomework = {
    "solve step by step: {}", "can you show me how to do this {} question step by step {}", "help with my {} homework: {}",
    "explain the answer to this {} problem: {}", "what is the answer to {} and why? {}", "check my work on this {} problem: {}"};
const std::vector<std::string> kInstructions = {
    "Write a persuasive essay about {}.", "Summarize the key ideas of {} in five bullet points.", "Generate a quiz with answers on {}.",
    "Write a dialogue between two experts disagreeing about {}.", "Create a lesson plan that introduces {}.",
    "List the pros and cons of {} with a short justification each.", "Write a story in which {} plays a central role.",
    "Explain {} and then give an exercise with its solution.", "Classify the following statement about {} as true or false and explain: {}",
    "Answer as a tutor would: what connects {} and {}?", "Produce a FAQ of eight questions about {}.", "Critique this claim about {}: {}"};
const std::vector<std::string> kTickets = {
    "Customer reports that the {} on order {} arrived damaged and asks for a refund.",
    "User cannot log in after resetting the {}; error code {}.", "Invoice {} shows a duplicate charge for {}.",
    "The delivery of {} was delayed by {} days; customer is upset.", "Request to change the shipping address for order {} ({})."};
const std::vector<std::string> kProse = {
    "The river had long since changed its course", "Nobody in the village remembered who built the bridge",
    "In the decades after the war the factories", "Her letters described the winter in great detail",
    "The committee met again on Thursday", "Scientists have argued for years about", "The old map showed a road that no longer existed",
    "By the end of the century the city had", "The report concluded that the", "He walked along the harbour while",
    "Prices rose sharply in the spring", "The museum's collection includes", "Early settlers planted orchards along"};

std::ifstream open_or_fail(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("simulation text: cannot open '{}' (expected the layout of ../shared/data)", path);
  return in;
}

void read_questions(const std::string& path, RealText& t) {
  auto in = open_or_fail(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = parse_json_or_discarded(line);
    if (!j.is_object() || !j.contains("query") || !j["query"].is_string() || !j.contains("choices")) continue;
    std::string q = j["query"].get<std::string>();
    if (q.rfind("Question: ", 0) == 0) q = q.substr(10);
    std::vector<std::string> choices;
    for (const auto& c : j["choices"])
      if (c.is_string()) choices.push_back(c.get<std::string>());
    t.questions.push_back(q);
    t.choices.push_back(choices);
  }
}

}  // namespace

std::shared_ptr<const RealText> load_real_text(const std::string& dir) {
  auto t = std::make_shared<RealText>();
  {  // HellaSwag: 6 lines per item, the first "activity label: context".
    auto in = open_or_fail(dir + "/eval/hellaswag_val_full.txt");
    std::map<std::string, std::vector<std::string>> by_label;
    std::string line;
    for (int64_t n = 0; std::getline(in, line); ++n) {
      if (n % 6 != 0) continue;
      const size_t colon = line.find(": ");
      if (colon == std::string::npos) continue;
      by_label[line.substr(0, colon)].push_back(line.substr(colon + 2));
    }
    for (auto& [label, texts] : by_label)
      if (texts.size() >= 40) t->domain_names.push_back(label), t->domain_texts.push_back(std::move(texts));
  }
  for (const char* f : {"/eval/arc_easy.jsonl", "/eval/arc_challenge.jsonl", "/eval/piqa.jsonl"}) read_questions(dir + f, *t);
  for (const char* f : {"/text/wikitext2_valid.txt", "/text/wikitext2_test.txt"}) {
    auto in = open_or_fail(dir + f);
    std::string line;
    while (std::getline(in, line))
      if (line.size() > 300 && line.find(" = ") != 1) t->corpus += line.substr(1);
  }
  if (t->domain_names.size() < 8 || t->questions.size() < 1000 || t->corpus.size() < 100000)
    fail("simulation text in '{}': too little read ({} domains, {} questions, {} bytes of WikiText)", dir, t->domain_names.size(),
         t->questions.size(), t->corpus.size());
  return t;
}

size_t Content::domains() const { return real_ ? real_->domain_names.size() : kDomains.size(); }
int Content::reasoning_styles() { return static_cast<int>(kReasoning.size()); }
std::string Content::noun(size_t domain) {
  if (real_) return real_->domain_names[domain % real_->domain_names.size()];
  return pick(kDomains[domain % kDomains.size()]);
}
const std::string& Content::real_text(size_t domain) { return pick(real_->domain_texts[domain % real_->domain_texts.size()]); }

std::string Content::words(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? " " : "") + pick(kFiller);
  return s;
}

std::string Content::question(size_t d) {
  if (real_) return uniform(0, 1) ? fmt::format(fmt::runtime(pick(kQuestions)), noun(d), noun(d)) + " " + real_text(d) : pick(real_->questions);
  std::string q = fmt::format(fmt::runtime(pick(kQuestions)), noun(d), noun(d));
  if (uniform(0, 2) == 0) q += " " + words(uniform(2, 10));
  return q;
}

std::string Content::chatter() { return fmt::format(fmt::runtime(pick(kChatter)), noun(static_cast<size_t>(uniform(0, 99)))); }

std::string Content::code_question() {
  return fmt::format(fmt::runtime(pick(kCode)), noun(2), "`" + words(uniform(6, 30)) + "`");
}

std::string Content::passage(int sentences) {
  if (real_) {
    // A window of the corpus from a random word, as a harvest chunks a large corpus; cut at
    // spaces, never inside a UTF-8 sequence.
    const std::string& c = real_->corpus;
    const size_t length = static_cast<size_t>(sentences) * 120;
    size_t from = c.find(' ', std::uniform_int_distribution<size_t>(0, c.size() - length - 1)(rng_));
    const size_t to = c.rfind(' ', from + length);
    return c.substr(from + 1, to - from - 1);
  }
  std::string s;
  for (int i = 0; i < sentences; ++i) {
    s += pick(kProse) + " " + words(uniform(4, 14)) + " " + noun(static_cast<size_t>(uniform(0, 99))) + ". ";
  }
  return s;
}

std::string Content::benchmark_context(size_t d) {
  if (real_) return "Question: " + pick(real_->questions) + "\nAnswer:";
  return fmt::format("Question: Which of the following best describes {} in the context of {}? {}\nAnswer:", noun(d), noun(d),
                     words(uniform(3, 12)));
}

std::string Content::answer_choice(size_t d) {
  if (real_) {
    const auto& c = pick(real_->choices);
    if (!c.empty()) return " " + pick(c);
  }
  return " " + noun(d) + " " + words(uniform(1, 4));
}

std::string Content::reasoning_request(size_t d, int style) {
  const std::string& t = kReasoning[static_cast<size_t>(style) % kReasoning.size()];
  if (real_) return fmt::format(fmt::runtime(t), noun(d), real_text(d));
  return fmt::format(fmt::runtime(t), noun(d), question(d) + " " + words(uniform(3, 15)));
}

std::string Content::homework(size_t d) {
  if (real_) return fmt::format(fmt::runtime(pick(kHomework)), noun(d), pick(real_->questions));
  return fmt::format(fmt::runtime(pick(kHomework)), noun(d), fmt::format("{} {} {}", uniform(2, 999), noun(d), uniform(2, 99)));
}

std::string Content::instruction(size_t d) {
  std::string s = fmt::format(fmt::runtime(pick(kInstructions)), noun(d), noun(d));
  return real_ ? s + " " + real_text(d) : s;
}

std::string Content::ticket() {
  return fmt::format(fmt::runtime(pick(kTickets)), words(2), uniform(1000, 99999)) + " " + words(uniform(5, 30));
}

}  // namespace lineage::protect::sim
