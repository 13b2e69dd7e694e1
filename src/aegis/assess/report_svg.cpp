// Robustness curves as SVG: robust accuracy against the perturbation budget, one line per attack
// and norm, drawn from `aegis attack` results. Plain SVG 1.1 (no scripts, no external fonts), so
// that it works as an <img> data: URI and in any viewer.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "aegis/assess/report_json_view.h"
#include "aegis/assess/report_text.h"
#include "aegis/assess/report_writer.h"

namespace aegis::assess {
namespace {

using nlohmann::json;
using namespace report_view;

constexpr int kWidth = 760, kHeight = 460;
constexpr double kLeft = 70, kRight = 210, kTop = 50, kBottom = 60;
constexpr double kPlotWidth = kWidth - kLeft - kRight, kPlotHeight = kHeight - kTop - kBottom;
constexpr std::size_t kMaxSeries = 12;
constexpr std::size_t kMaxLegendChars = 26;
// Okabe-Ito colours (distinguishable with colour-blindness), then dashes for the next round.
constexpr const char* kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"};
constexpr const char* kDashes[] = {"", "6 3", "2 3"};

struct Series {
  std::string attack, norm;
  std::vector<std::pair<double, double>> points;  // (eps, robust accuracy), sorted by eps
};

std::string coordinate(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f", value);
  return buffer;
}

std::string data_number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6g", value);
  return buffer;
}

// A tick step of 1, 2, 2.5 or 5 times a power of ten giving about `ticks` intervals up to `max`.
double nice_step(double max, int ticks) {
  const double raw = max / ticks;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double factor : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (raw <= factor * magnitude * (1 + 1e-9)) return factor * magnitude;
  return 10 * magnitude;
}

std::vector<Series> collect_series(const json& check_results, std::size_t& left_out) {
  std::vector<Series> series;
  left_out = 0;
  const auto clean = number(check_results, "clean_accuracy");
  for (const auto& result : list(check_results, "results")) {
    const auto eps = number(result, "eps");
    const auto accuracy = number(result, "robust_accuracy");
    if (!eps || !accuracy || *eps < 0) continue;  // minimal-perturbation attacks have no budget axis
    const std::string attack = text(result, "attack"), norm = text(result, "norm");
    auto it = std::find_if(series.begin(), series.end(), [&](const Series& s) { return s.attack == attack && s.norm == norm; });
    if (it == series.end()) {
      if (series.size() == kMaxSeries) {
        ++left_out;
        continue;
      }
      series.push_back({attack, norm, {}});
      it = series.end() - 1;
    }
    it->points.emplace_back(*eps, std::clamp(*accuracy, 0.0, 1.0));
  }
  for (auto& s : series) {
    std::stable_sort(s.points.begin(), s.points.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    if (clean && (s.points.empty() || s.points.front().first > 0))
      s.points.insert(s.points.begin(), {0.0, std::clamp(*clean, 0.0, 1.0)});
  }
  return series;
}

}  // namespace

std::string robustness_curve_svg(const json& check_results) {
  std::size_t left_out = 0;
  const auto series = collect_series(check_results, left_out);
  double max_eps = 0;
  for (const auto& s : series)
    for (const auto& point : s.points) max_eps = std::max(max_eps, point.first);
  double x_step = max_eps > 0 ? nice_step(max_eps, 5) : 0.2;
  double x_max = max_eps > 0 ? std::ceil(max_eps / x_step - 1e-9) * x_step : 1.0;
  // Budgets at the ends of the double range (hostile results) must not turn the axis into inf or NaN.
  if (!(x_step > 0 && std::isfinite(x_step) && x_max > 0 && std::isfinite(x_max) && x_max / x_step <= 20)) {
    x_max = max_eps > 0 && std::isfinite(max_eps / 5) && max_eps / 5 > 0 ? max_eps : 1.0;
    x_step = x_max / 5;
  }
  const auto x_of = [&](double eps) { return kLeft + eps / x_max * kPlotWidth; };
  const auto y_of = [&](double accuracy) { return kTop + (1.0 - accuracy) * kPlotHeight; };

  std::string svg;
  svg += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(kWidth) + "\" height=\"" +
         std::to_string(kHeight) + "\" viewBox=\"0 0 " + std::to_string(kWidth) + " " + std::to_string(kHeight) +
         "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  svg += "<title>Robust accuracy against perturbation budget</title>\n";
  svg += "<rect x=\"0\" y=\"0\" width=\"" + std::to_string(kWidth) + "\" height=\"" + std::to_string(kHeight) +
         "\" fill=\"#ffffff\"/>\n";
  svg += "<text x=\"" + coordinate(kLeft + kPlotWidth / 2) +
         "\" y=\"28\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">Robust accuracy against perturbation budget</text>\n";

  // Grid, ticks and tick labels.
  svg += "<g class=\"grid\" stroke=\"#dddddd\" stroke-width=\"1\">\n";
  for (int i = 0; i <= 5; ++i) {
    const double y = y_of(i * 0.2);
    svg += "<line x1=\"" + coordinate(kLeft) + "\" y1=\"" + coordinate(y) + "\" x2=\"" + coordinate(kLeft + kPlotWidth) +
           "\" y2=\"" + coordinate(y) + "\"/>\n";
  }
  const int x_ticks = static_cast<int>(std::lround(x_max / x_step));
  for (int i = 0; i <= x_ticks; ++i) {
    const double x = x_of(i * x_step);
    svg += "<line x1=\"" + coordinate(x) + "\" y1=\"" + coordinate(kTop) + "\" x2=\"" + coordinate(x) + "\" y2=\"" +
           coordinate(kTop + kPlotHeight) + "\"/>\n";
  }
  svg += "</g>\n<g class=\"ticks\" fill=\"#333333\">\n";
  for (int i = 0; i <= 5; ++i)
    svg += "<text x=\"" + coordinate(kLeft - 8) + "\" y=\"" + coordinate(y_of(i * 0.2) + 4) + "\" text-anchor=\"end\">" +
           report_text::fixed(i * 0.2, 1) + "</text>\n";
  for (int i = 0; i <= x_ticks; ++i)
    svg += "<text x=\"" + coordinate(x_of(i * x_step)) + "\" y=\"" + coordinate(kTop + kPlotHeight + 18) +
           "\" text-anchor=\"middle\">" + report_text::short_number(i * x_step) + "</text>\n";
  svg += "</g>\n";
  svg += "<rect x=\"" + coordinate(kLeft) + "\" y=\"" + coordinate(kTop) + "\" width=\"" + coordinate(kPlotWidth) +
         "\" height=\"" + coordinate(kPlotHeight) + "\" fill=\"none\" stroke=\"#333333\" stroke-width=\"1\"/>\n";
  svg += "<text x=\"" + coordinate(kLeft + kPlotWidth / 2) + "\" y=\"" + coordinate(kHeight - 16) +
         "\" text-anchor=\"middle\">perturbation budget (eps)</text>\n";
  svg += "<text x=\"18\" y=\"" + coordinate(kTop + kPlotHeight / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " +
         coordinate(kTop + kPlotHeight / 2) + ")\">robust accuracy</text>\n";

  if (series.empty())
    svg += "<text x=\"" + coordinate(kLeft + kPlotWidth / 2) + "\" y=\"" + coordinate(kTop + kPlotHeight / 2) +
           "\" text-anchor=\"middle\" fill=\"#666666\">no results with a perturbation budget to draw</text>\n";

  // Lines and points.
  for (std::size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    const std::string colour = kColours[i % std::size(kColours)];
    const std::string dash = kDashes[(i / std::size(kColours)) % std::size(kDashes)];
    svg += "<g class=\"series\" data-series=\"" + std::to_string(i) + "\">\n";
    if (s.points.size() > 1) {
      std::string points;
      for (const auto& [eps, accuracy] : s.points) points += coordinate(x_of(eps)) + "," + coordinate(y_of(accuracy)) + " ";
      points.pop_back();
      svg += "<polyline fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"2\"" +
             (dash.empty() ? std::string() : " stroke-dasharray=\"" + dash + "\"") + " points=\"" + points + "\"/>\n";
    }
    for (const auto& [eps, accuracy] : s.points)
      svg += "<circle class=\"point\" data-series=\"" + std::to_string(i) + "\" data-eps=\"" + data_number(eps) +
             "\" data-accuracy=\"" + data_number(accuracy) + "\" cx=\"" + coordinate(x_of(eps)) + "\" cy=\"" +
             coordinate(y_of(accuracy)) + "\" r=\"3.5\" fill=\"" + colour + "\"/>\n";
    svg += "</g>\n";
  }

  // Legend, right of the plot.
  const double legend_x = kLeft + kPlotWidth + 16;
  svg += "<g class=\"legend\">\n";
  for (std::size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    const double y = kTop + 10 + static_cast<double>(i) * 20;
    const std::string colour = kColours[i % std::size(kColours)];
    const std::string dash = kDashes[(i / std::size(kColours)) % std::size(kDashes)];
    std::string label = s.attack.empty() ? "attack" : s.attack;
    if (!s.norm.empty()) label += " (" + s.norm + ")";
    bool cut = false;
    std::string shown(report_text::utf8_prefix(label, kMaxLegendChars, cut));
    if (cut) shown += "...";
    svg += "<line x1=\"" + coordinate(legend_x) + "\" y1=\"" + coordinate(y) + "\" x2=\"" + coordinate(legend_x + 24) +
           "\" y2=\"" + coordinate(y) + "\" stroke=\"" + colour + "\" stroke-width=\"2\"" +
           (dash.empty() ? std::string() : " stroke-dasharray=\"" + dash + "\"") + "/>\n";
    svg += "<text x=\"" + coordinate(legend_x + 30) + "\" y=\"" + coordinate(y + 4) + "\">" + html_escape(shown) + "</text>\n";
  }
  if (left_out > 0)
    svg += "<text x=\"" + coordinate(legend_x) + "\" y=\"" + coordinate(kTop + 10 + static_cast<double>(series.size()) * 20 + 4) +
           "\" fill=\"#666666\">+" + std::to_string(left_out) + " results not drawn</text>\n";
  svg += "</g>\n</svg>\n";
  return svg;
}

}  // namespace aegis::assess
