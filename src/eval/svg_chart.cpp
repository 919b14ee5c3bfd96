// Inline SVG charts (see svg_chart.h): axes with "nice" ticks (1, 2, 5 x 10^k steps), polylines,
// markers, a legend; every number formatted here, nothing computed in the browser.
#include "lineage/eval/svg_chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace lineage::eval {

namespace {

constexpr int kLeft = 64, kRight = 16, kTop = 34, kBottom = 46;

struct Axis {
  double lo, hi;
  bool log = false;
  double map(double v, double a, double b) const {  // value -> pixel between a (lo) and b (hi)
    double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
    return a + t * (b - a);
  }
};

double nice_step(double span, int target) {
  double raw = span / std::max(1, target), p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}

std::string tick_text(double v) {
  double a = std::abs(v);
  if (a != 0 && (a >= 1e6 || a < 1e-3)) return fmt::format("{:.0e}", v);
  if (a >= 1000) return fmt::format("{:.0f}", v);
  return fmt::format("{:.4g}", v);
}

std::vector<double> ticks(const Axis& ax) {
  std::vector<double> t;
  if (ax.log) {
    for (double p = std::pow(10.0, std::floor(std::log10(ax.lo))); p <= ax.hi * 1.0001; p *= 10)
      for (double m : {1.0, 2.0, 5.0})
        if (p * m >= ax.lo * 0.9999 && p * m <= ax.hi * 1.0001) t.push_back(p * m);
    return t;
  }
  double step = nice_step(ax.hi - ax.lo, 6);
  for (double v = std::ceil(ax.lo / step) * step; v <= ax.hi + step * 1e-9; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return t;
}

Axis fit(double lo, double hi, bool log) {
  if (!(lo < hi)) {  // one value, or none
    double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  if (log) {
    lo = std::max(lo, 1e-12);
    return {std::pow(10.0, std::floor(std::log10(lo) * 4) / 4), std::pow(10.0, std::ceil(std::log10(hi) * 4) / 4), true};
  }
  double step = nice_step(hi - lo, 6);
  return {std::floor(lo / step) * step, std::ceil(hi / step) * step, false};
}

std::string frame(const ChartOptions& o, const Axis& x, const Axis& y) {
  const int W = o.width, H = o.height;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"11\" role=\"img\" aria-label=\"{}\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#fff\"/>\n"
      "<text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>\n",
      W, H, W, H, html_escape(o.title), W, H, kLeft, html_escape(o.title));
  for (double v : ticks(x)) {
    double px = x.map(v, kLeft, W - kRight);
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{}\" x2=\"{:.1f}\" y2=\"{}\" stroke=\"#eee\"/>"
                     "<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n",
                     px, kTop, px, H - kBottom, px, H - kBottom + 14, tick_text(v));
  }
  for (double v : ticks(y)) {
    double py = y.map(v, H - kBottom, kTop);
    s += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#eee\"/>"
                     "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" fill=\"#555\">{}</text>\n",
                     kLeft, py, W - kRight, py, kLeft - 4, py + 4, tick_text(v));
  }
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", kLeft, kTop,
                   W - kLeft - kRight, H - kTop - kBottom);
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\">{}</text>\n", (kLeft + W - kRight) / 2,
                   H - 8, html_escape(o.x_label));
  s += fmt::format("<text x=\"12\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\" transform=\"rotate(-90 12 {})\">{}</text>\n",
                   (kTop + H - kBottom) / 2, (kTop + H - kBottom) / 2, html_escape(o.y_label));
  return s;
}

}  // namespace

std::string line_chart(const std::vector<Series>& series, const ChartOptions& o) {
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  for (const auto& s : series)
    for (auto [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y) || (o.log_y && y <= 0)) continue;
      xlo = std::min(xlo, x), xhi = std::max(xhi, x), ylo = std::min(ylo, y), yhi = std::max(yhi, y);
    }
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1, ylo = o.log_y ? 1 : 0, yhi = o.log_y ? 10 : 1;
  Axis x = fit(xlo, xhi, false), y = fit(ylo, yhi, o.log_y);
  std::string s = frame(o, x, y);
  const int W = o.width, H = o.height;
  int legend_x = kLeft + 8;
  for (const auto& se : series) {
    std::vector<std::pair<double, double>> pts;
    for (auto p : se.points)
      if (std::isfinite(p.first) && std::isfinite(p.second) && !(o.log_y && p.second <= 0)) pts.push_back(p);
    std::sort(pts.begin(), pts.end());
    std::string poly;
    for (auto [px, py] : pts) poly += fmt::format("{:.1f},{:.1f} ", x.map(px, kLeft, W - kRight), y.map(py, H - kBottom, kTop));
    if (pts.size() > 1)
      s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{} points=\"{}\"/>\n", se.color,
                       se.dashed ? " stroke-dasharray=\"5,4\"" : "", poly);
    if (se.markers || pts.size() == 1)
      for (auto [px, py] : pts)
        s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{}: ({}, {})</title></circle>\n",
                         x.map(px, kLeft, W - kRight), y.map(py, H - kBottom, kTop), se.color, html_escape(se.label),
                         tick_text(px), tick_text(py));
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"{}/>"
                     "<text x=\"{}\" y=\"{}\">{}</text>\n",
                     legend_x, kTop + 12, legend_x + 18, kTop + 12, se.color, se.dashed ? " stroke-dasharray=\"5,4\"" : "",
                     legend_x + 22, kTop + 16, html_escape(se.label));
    legend_x += 30 + static_cast<int>(se.label.size()) * 6;
  }
  return s + "</svg>\n";
}

std::string scatter_chart(const std::vector<LabeledPoint>& points, const ChartOptions& o, double ref_x, double ref_y) {
  double xhi = ref_x, yhi = ref_y;
  for (const auto& p : points) xhi = std::max(xhi, p.x), yhi = std::max(yhi, p.y);
  Axis x = fit(0, std::max(xhi, 1e-9) * 1.08, false), y = fit(0, std::max(yhi, 1e-9) * 1.08, false);
  std::string s = frame(o, x, y);
  const int W = o.width, H = o.height;
  if (ref_x >= 0) {
    double px = x.map(ref_x, kLeft, W - kRight), py = y.map(ref_y, H - kBottom, kTop);
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#888\" stroke-dasharray=\"3,3\"/>"
                     "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#888\" stroke-dasharray=\"3,3\"/>"
                     "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"#444\"/>"
                     "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" fill=\"#444\">teacher</text>\n",
                     px, H - kBottom, px, py, kLeft, py, px, py, px, py, px - 6, py - 6);
  }
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i];
    double px = x.map(p.x, kLeft, W - kRight), py = y.map(p.y, H - kBottom, kTop);
    s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"{}\"><title>{}: ({}, {})</title></circle>"
                     "<text x=\"{:.1f}\" y=\"{:.1f}\" fill=\"{}\">{}</text>\n",
                     px, py, p.color, html_escape(p.label), tick_text(p.x), tick_text(p.y), px + 6,
                     py - 8 - 13.0 * static_cast<double>(i), p.color, html_escape(p.label));  // stacked: points often sit close
  }
  return s + "</svg>\n";
}

}  // namespace lineage::eval
