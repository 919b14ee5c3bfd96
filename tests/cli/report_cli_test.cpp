// lineage report: the page a distillation writes holds its figures, is self-contained (no
// script, no network), and headless Chromium renders it to a PNG that is not blank.
#include <fmt/format.h>
#include <png.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "test_util.h"
#include "tiny_teacher.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgba;  // (height, width, 4)
};

Image read_png(const fs::path& p) {
  Image img;
  png_image pi;
  std::memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&pi, p.c_str())) return img;
  pi.format = PNG_FORMAT_RGBA;
  img.rgba.resize(PNG_IMAGE_SIZE(pi));
  if (!png_image_finish_read(&pi, nullptr, img.rgba.data(), 0, nullptr)) return {};
  img.width = static_cast<int>(pi.width);
  img.height = static_cast<int>(pi.height);
  return img;
}

std::string chromium() {
  for (const char* c : {"chromium", "chromium-browser", "google-chrome"})
    if (std::system((std::string("command -v ") + c + " >/dev/null 2>&1").c_str()) == 0) return c;
  return "";
}

// Headless `browser`'s screenshot of the page, width x height; an empty image when it failed (its
// log is then in *log).
Image render(const std::string& browser, const fs::path& page, int width, int height, std::string* log) {
  const fs::path png = fs::path(page).replace_extension(".png"), out = fs::path(page).replace_extension(".chromium.log");
  const std::string cmd = browser + " --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=" + std::to_string(width) +
                          "," + std::to_string(height) + " --screenshot=" + quote(png.string()) + " " +
                          quote("file://" + page.string()) + " > " + quote(out.string()) + " 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    *log = testing::slurp(out);
    return {};
  }
  return read_png(png);
}

TEST(ReportCli, ADistillationWritesAPageThatRendersWithItsFigures) {
  TempDir tmp;
  lineage::testing::write_tiny_teacher(tmp / "teacher.gguf");
  testing::spit(tmp / "corpus.txt", lineage::testing::tiny_corpus(300));
  const std::string common = " --teacher " + quote((tmp / "teacher.gguf").string()) + " --data " +
                             quote((tmp / "corpus.txt").string()) +
                             " --seq-len 32 --dim 16 --layers 1 --heads 2 --batch-size 4 --steps 30 --eval-every 10 --eval-rows 4";
  auto kd = run_lineage("distill" + common + " --out " + quote((tmp / "kd").string()));
  ASSERT_EQ(kd.exit_code, 0) << kd.err;
  EXPECT_NE(kd.out.find("report: "), std::string::npos);
  ASSERT_TRUE(fs::exists(tmp / "kd" / "report.html"));
  auto ce = run_lineage("distill" + common + " --alpha 0 --out " + quote((tmp / "ce").string()));
  ASSERT_EQ(ce.exit_code, 0) << ce.err;
  auto rep = run_lineage("report " + quote((tmp / "kd").string()) + " --baseline " + quote((tmp / "ce").string()) +
                         " --out " + quote((tmp / "page.html").string()));
  ASSERT_EQ(rep.exit_code, 0) << rep.err;
  std::string html = testing::slurp(tmp / "page.html");
  auto summary = nlohmann::json::parse(testing::slurp(tmp / "kd" / "summary.json"));
  // The figures of the run, the charts, the provenance; nothing fetched, nothing scripted.
  EXPECT_NE(html.find(fmt::format("{:.3f}", summary["student"]["perplexity"].get<double>())), std::string::npos);
  EXPECT_NE(html.find("CE-only baseline"), std::string::npos);
  EXPECT_GE(std::count(html.begin(), html.end(), '<'), 100);
  size_t svgs = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++svgs;
  EXPECT_EQ(svgs, 3u);  // loss, perplexity, quality vs cost
  EXPECT_NE(html.find("<polyline"), std::string::npos);
  EXPECT_NE(html.find(summary["teacher"]["name"].get<std::string>()), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));  // only the SVG namespace
  EXPECT_EQ(html.find("https://"), std::string::npos);

  const std::string browser = chromium();
  if (browser.empty()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  std::string log;
  Image img = render(browser, tmp / "page.html", 1000, 1600, &log);
  ASSERT_TRUE(log.empty()) << log;
  ASSERT_EQ(img.width, 1000);
  ASSERT_EQ(img.height, 1600);
  // Not blank: a fair share of non-white pixels, in several colours (text, the series' lines).
  int64_t ink = 0;
  std::set<uint32_t> colours;
  for (size_t i = 0; i + 3 < img.rgba.size(); i += 4) {
    uint8_t r = img.rgba[i], g = img.rgba[i + 1], b = img.rgba[i + 2];
    if (r < 200 || g < 200 || b < 200) ++ink;
    colours.insert((uint32_t(r) >> 4 << 8) | (uint32_t(g) >> 4 << 4) | (uint32_t(b) >> 4));
  }
  EXPECT_GT(ink, 1000 * 1600 / 100) << "under 1% of the page is drawn on";
  EXPECT_GT(colours.size(), 20u);
}

// lineage monitor --html: the owner's page for a simulated log holds the flagged keys, their
// evidence and the community graphs, and renders in headless Chromium.
TEST(ReportCli, TheMonitorsPageHoldsItsFlagsAndRenders) {
  TempDir tmp;
  auto r = run_lineage("monitor --simulate " + quote((tmp / "sim.jsonl").string()) + " --keys 150 --campaign-keys 50 --days 2 --seed 17" +
                       " --json " + quote((tmp / "m.json").string()) + " --html " + quote((tmp / "m.html").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string html = testing::slurp(tmp / "m.html");
  const auto j = nlohmann::json::parse(testing::slurp(tmp / "m.json"));
  int shown = 0;
  for (const auto& k : j["keys"])
    if (k["flagged"].get<bool>() && shown++ < 5) {
      EXPECT_NE(html.find("Key " + k["key_id"].get<std::string>()), std::string::npos) << k["key_id"];
      EXPECT_NE(html.find(k["evidence"][0]["signal"].get<std::string>()), std::string::npos);
    }
  EXPECT_GT(shown, 0);
  EXPECT_NE(html.find("class=\"node flagged\""), std::string::npos) << "no flagged community drawn";
  EXPECT_NE(html.find("Ordinary keys nearest the threshold"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);

  const std::string browser = chromium();
  if (browser.empty()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  std::string log;
  Image img = render(browser, tmp / "m.html", 1000, 1400, &log);
  ASSERT_TRUE(log.empty()) << log;
  ASSERT_EQ(img.width, 1000);
  int64_t ink = 0, red = 0;
  for (size_t i = 0; i + 3 < img.rgba.size(); i += 4) {
    const uint8_t cr = img.rgba[i], cg = img.rgba[i + 1], cb = img.rgba[i + 2];
    ink += cr < 200 || cg < 200 || cb < 200;
    red += cr > 180 && cg < 110 && cb < 110;  // flagged keys in the graph, positive weights
  }
  EXPECT_GT(ink, 1000 * 1400 / 100) << "under 1% of the page is drawn on";
  EXPECT_GT(red, 50) << "no flagged key drawn in red";
}

TEST(ReportCli, TheDeterrenceStudysPageDrawsEveryDefenceAgainstPlainSampling) {
  TempDir tmp;
  // Rows as scripts/study_deterrence.sh writes them (figures made up; the page's arithmetic is checked).
  auto row = [](const std::string& name, const std::string& kind, double strength, const std::string& proxy,
                double agreement, double sample_ppl, double student_ppl, double p_fp, double p_wm) {
    return nlohmann::json{{"name", name}, {"kind", kind}, {"strength", strength}, {"proxy", proxy},
                          {"teacher_agreement", agreement}, {"sample_ppl", sample_ppl}, {"student_ppl_full", student_ppl},
                          {"student_agreement_full", 0.4}, {"trace_fp_p_full", p_fp}, {"trace_wm_p_full", p_wm},
                          {"trace_fp_p_small", p_fp * 10}, {"trace_wm_p_small", p_wm * 10}}
        .dump();
  };
  const std::string rows = row("plain_t1.0", "plain", 1.0, "", 1.0, 40.0, 100.0, 0.5, 0.5) + "\n" +
                           row("plain_t1.5", "plain", 1.5, "", 0.9, 60.0, 130.0, 0.4, 0.6) + "\n" +
                           row("watermark_d2", "watermark", 2, "", 0.55, 48.0, 104.0, 0.3, 1e-9) + "\n" +
                           row("antidistill_a_0.1", "antidistill", 0.1, "a", 0.91, 41.0, 125.0, 0.2, 0.5) + "\n" +
                           row("antidistill_b_0.1", "antidistill", 0.1, "b", 0.93, 40.5, 110.0, 0.2, 0.5) + "\n" +
                           row("fingerprint_a_0.2", "fingerprint", 0.2, "a", 0.7, 44.0, 103.0, 1e-12, 0.4) + "\n";
  testing::spit(tmp / "results.jsonl", rows);
  std::string line;
  auto r = run_lineage("report --deterrence " + quote((tmp / "results.jsonl").string()) + " --out " +
                       quote((tmp / "d.html").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string html = testing::slurp(tmp / "d.html");
  for (const char* name : {"plain_t1.5", "watermark_d2", "antidistill_a_0.1", "antidistill_b_0.1", "fingerprint_a_0.2"})
    EXPECT_NE(html.find(name), std::string::npos) << name;
  for (const char* series : {"antidistill (proxy a)", "antidistill (proxy b)", "fingerprint (proxy a)", "watermark"})
    EXPECT_NE(html.find(series), std::string::npos) << series;
  EXPECT_NE(html.find("+25.0%"), std::string::npos) << "antidistill_a_0.1's student: 125 against 100";
  EXPECT_NE(html.find("+2.5%"), std::string::npos) << "antidistill_a_0.1's samples: 41 against 40";
  size_t charts = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++charts;
  EXPECT_EQ(charts, 4u);
  EXPECT_EQ(html.find("<script"), std::string::npos);

  // With pre-trained students on every row: their two charts as well.
  std::string warm;
  for (std::istringstream in(rows); std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    j["warm_ppl_reference"] = j["student_ppl_full"].get<double>() * 0.6;
    j["warm_ppl_proxy_a"] = j["student_ppl_full"].get<double>() * 0.5;
    warm += j.dump() + "\n";
  }
  testing::spit(tmp / "warm.jsonl", warm);
  r = run_lineage("report --deterrence " + quote((tmp / "warm.jsonl").string()) + " --out " + quote((tmp / "w.html").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string whtml = testing::slurp(tmp / "w.html");
  charts = 0;
  for (size_t at = whtml.find("<svg"); at != std::string::npos; at = whtml.find("<svg", at + 1)) ++charts;
  EXPECT_EQ(charts, 6u);
  EXPECT_NE(whtml.find("the proxy itself, fine-tuned"), std::string::npos);

  testing::spit(tmp / "nobase.jsonl", row("watermark_d2", "watermark", 2, "", 0.55, 48.0, 104.0, 0.3, 1e-9) + "\n");
  r = run_lineage("report --deterrence " + quote((tmp / "nobase.jsonl").string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("plain_t1.0"), std::string::npos) << r.err;
  testing::spit(tmp / "short.jsonl", rows + "{\"name\": \"x\"}\n");
  r = run_lineage("report --deterrence " + quote((tmp / "short.jsonl").string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("line 7"), std::string::npos) << r.err;

  const std::string browser = chromium();
  if (browser.empty()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  std::string log;
  Image img = render(browser, tmp / "d.html", 1000, 1600, &log);
  ASSERT_TRUE(log.empty()) << log;
  ASSERT_EQ(img.width, 1000);
  int64_t ink = 0;
  for (size_t i = 0; i + 3 < img.rgba.size(); i += 4) ink += img.rgba[i] < 200 || img.rgba[i + 1] < 200 || img.rgba[i + 2] < 200;
  EXPECT_GT(ink, 1000 * 1600 / 100) << "under 1% of the page is drawn on";
}

// The student as its teacher's draft: bench_speculative --out writes the run's speculative.jsonl
// (a tiny teacher and a student distilled from it here), and the report shows every k's
// acceptance, tokens per check and speed-up from it; a file that is not the bench's is refused.
TEST(ReportCli, TheRunsPageShowsTheStudentAsASpeculativeDraft) {
  const fs::path bench = fs::path(LINEAGE_BINARY).parent_path() / "bench" / "bench_speculative";
  if (!fs::exists(bench)) GTEST_SKIP() << "bench_speculative is not built beside lineage (" << bench << ")";
  TempDir tmp;
  lineage::testing::write_tiny_teacher(tmp / "teacher.gguf");
  testing::spit(tmp / "corpus.txt", lineage::testing::tiny_corpus(300));
  auto kd = run_lineage("distill --teacher " + quote((tmp / "teacher.gguf").string()) + " --data " +
                        quote((tmp / "corpus.txt").string()) +
                        " --seq-len 32 --dim 16 --layers 1 --heads 2 --batch-size 4 --steps 20 --eval-every 10 --eval-rows 4"
                        " --out " +
                        quote((tmp / "kd").string()));
  ASSERT_EQ(kd.exit_code, 0) << kd.err;
  fs::path draft = tmp / "kd" / "student.gguf";
  ASSERT_TRUE(fs::exists(draft)) << "the distillation wrote no student.gguf";
  const std::string cmd = quote(bench.string()) + " " + quote((tmp / "teacher.gguf").string()) + " --draft " +
                          quote(draft.string()) + " --tokens 12 --rounds 1 --k-list 2,4 --out " +
                          quote((tmp / "kd" / "speculative.jsonl").string()) + " > " + quote((tmp / "bench.out").string()) +
                          " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::slurp(tmp / "bench.out");
  std::vector<nlohmann::json> lines;
  std::istringstream in(testing::slurp(tmp / "kd" / "speculative.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  auto rep = run_lineage("report " + quote((tmp / "kd").string()));
  ASSERT_EQ(rep.exit_code, 0) << rep.err;
  const std::string html = testing::slurp(tmp / "kd" / "report.html");
  EXPECT_NE(html.find("As a speculative draft"), std::string::npos);
  int configs = 0;
  for (const auto& j : lines) {
    if (!j.contains("k")) continue;
    ++configs;
    EXPECT_NE(html.find(fmt::format("{:.2f}×", j["speedup"].get<double>())), std::string::npos) << j.dump();
    if (j.contains("acceptance_rate"))
      EXPECT_NE(html.find(fmt::format("{:.1f}%", 100 * j["acceptance_rate"].get<double>())), std::string::npos) << j.dump();
  }
  EXPECT_EQ(configs, 3);  // the teacher alone, k = 2 and k = 4
  testing::spit(tmp / "other.jsonl", "{\"bench\":\"serve\"}\n");
  auto bad = run_lineage("report " + quote((tmp / "kd").string()) + " --speculative " + quote((tmp / "other.jsonl").string()) +
                         " --out " + quote((tmp / "bad.html").string()));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("not a line of bench_speculative"), std::string::npos) << bad.err;
}

TEST(ReportCli, ADirectoryThatIsNotARunIsRefused) {
  TempDir tmp;
  fs::create_directories(tmp / "empty");
  auto r = run_lineage("report " + quote((tmp / "empty").string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("metrics.jsonl is missing"), std::string::npos) << r.err;
  r = run_lineage("report " + quote((tmp / "nope").string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lineage
