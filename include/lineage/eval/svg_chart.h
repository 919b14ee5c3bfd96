// Charts as inline SVG text, for reports that open anywhere without a network or JavaScript:
// a line chart (series of (x, y) points, optional dashes and markers) and a scatter with labels.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "lineage/core/html.h"

namespace lineage::eval {

struct Series {
  std::string label;
  std::vector<std::pair<double, double>> points;  // (x, y), any order of x
  std::string color = "#1f77b4";
  bool dashed = false;
  bool markers = false;  // a dot at every point (sparse series such as evaluations)
};

struct ChartOptions {
  std::string title, x_label, y_label;
  int width = 640, height = 320;
  bool log_y = false;
};

std::string line_chart(const std::vector<Series>& series, const ChartOptions& options);

struct LabeledPoint {
  std::string label;
  double x, y;
  std::string color = "#d62728";
};

// A scatter with a dashed reference point-to-axes guide at (ref_x, ref_y) when ref_x >= 0.
std::string scatter_chart(const std::vector<LabeledPoint>& points, const ChartOptions& options, double ref_x = -1,
                          double ref_y = -1);

// html_escape: lineage/core/html.h.

}  // namespace lineage::eval
