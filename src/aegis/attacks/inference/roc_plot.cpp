#include "aegis/attacks/inference/roc_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

constexpr int kSize = 800;
constexpr double kLeft = 100, kTop = 30, kSide = 660;  // the square plot area
constexpr double kRight = kLeft + kSide, kBottom = kTop + kSide;

struct Rgb {
  int r, g, b;
};
// Matplotlib's tab10, which stays distinguishable for most colour-blind readers.
constexpr Rgb kColours[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
                            {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
Rgb colour(std::size_t i) { return kColours[i % std::size(kColours)]; }

struct Tick {
  double value;
  std::string base, exponent;  // "10" and "-3" on log axes; "0.4" and "" on linear ones
};

struct Point {
  double x, y;
};

// Where rates land on the page; both axes share one scale so that the diagonal is the diagonal.
class Frame {
 public:
  Frame(std::span<const RocSeries> series, bool log_scale) : log_(log_scale) {
    if (series.empty())
      throw core::Error("ROC plot: there are no curves to draw", "evaluate at least one attack first");
    if (!log_) return;
    double smallest = 1.0;
    bool any = false;
    for (const RocSeries& s : series)
      for (const std::vector<double>* rates : {&s.roc.fpr, &s.roc.tpr})
        for (double v : *rates)
          if (v > 0 && std::isfinite(v)) {
            smallest = std::min(smallest, v);
            any = true;
          }
    // The smallest non-zero FPR is 1 / non-members, so its decade shows every step the data resolves.
    lowest_decade_ = any ? static_cast<int>(std::floor(std::log10(smallest) + 1e-9)) : -4;
    lowest_decade_ = std::clamp(lowest_decade_, -8, -1);
  }

  Point at(double fpr, double tpr) const { return {kLeft + kSide * unit(fpr), kBottom - kSide * unit(tpr)}; }

  std::vector<Tick> ticks() const {
    std::vector<Tick> out;
    if (log_) {
      for (int k = lowest_decade_; k <= 0; ++k) out.push_back({std::pow(10.0, k), "10", std::to_string(k)});
    } else {
      char text[8];
      for (int k = 0; k <= 5; ++k) {
        std::snprintf(text, sizeof text, "%.1f", k * 0.2);
        out.push_back({k * 0.2, text, ""});
      }
    }
    return out;
  }

  double minimum() const { return log_ ? std::pow(10.0, lowest_decade_) : 0.0; }

 private:
  // 0 at the axis minimum, 1 at rate 1; zeros and anything below the minimum sit on the axis.
  double unit(double v) const {
    if (!std::isfinite(v)) v = 0;
    if (!log_) return std::clamp(v, 0.0, 1.0);
    const double low = lowest_decade_;
    const double lv = v > 0 ? std::log10(v) : low;
    return std::clamp((lv - low) / -low, 0.0, 1.0);
  }

  bool log_;
  int lowest_decade_ = -4;
};

// The curve in page coordinates, without points that fall on the previous one: a 20,000-record ROC
// has far more points than the plot has pixels.
std::vector<Point> trace(const Frame& frame, const RocCurve& roc) {
  std::vector<Point> points;
  for (std::size_t i = 0; i < roc.fpr.size() && i < roc.tpr.size(); ++i) {
    const Point p = frame.at(roc.fpr[i], roc.tpr[i]);
    if (!points.empty() && std::abs(p.x - points.back().x) < 0.1 && std::abs(p.y - points.back().y) < 0.1) continue;
    points.push_back(p);
  }
  return points;
}

std::string legend_text(const RocSeries& s) {
  char auc[32];
  std::snprintf(auc, sizeof auc, " (AUC %.3f)", s.auc);
  return s.name + auc;
}

void write_bytes(const std::string& path, const char* data, std::size_t size) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (file) file.write(data, static_cast<std::streamsize>(size));
  if (file) file.close();
  if (!file)
    throw core::Error("ROC plot: cannot write " + path, "check that the folder exists and that you may write there");
}

// ---- SVG ----

// Text for XML: markup characters escaped, control characters and bytes that are not UTF-8 replaced,
// so a hostile name can neither inject markup nor make the file unreadable.
std::string xml_text(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&apos;"; break;
        default: out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
      }
      ++i;
      continue;
    }
    const std::size_t length = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    bool valid = length > 0 && c < 0xf5 && i + length <= text.size();
    for (std::size_t k = 1; valid && k < length; ++k) valid = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    if (valid) {
      out.append(text, i, length);
      i += length;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

std::string svg_number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", v);
  return text;
}

std::string svg_colour(Rgb c) {
  char text[8];
  std::snprintf(text, sizeof text, "#%02x%02x%02x", c.r, c.g, c.b);
  return text;
}

std::string svg(std::span<const RocSeries> series, bool log_scale) {
  const Frame frame(series, log_scale);
  std::string s;
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"800\" viewBox=\"0 0 800 800\" "
       "font-family=\"DejaVu Sans, Arial, sans-serif\">\n";
  s += "<rect width=\"800\" height=\"800\" fill=\"white\"/>\n";
  for (const Tick& t : frame.ticks()) {
    const Point p = frame.at(t.value, t.value);
    s += "<line x1=\"" + svg_number(p.x) + "\" y1=\"" + svg_number(kTop) + "\" x2=\"" + svg_number(p.x) + "\" y2=\"" +
         svg_number(kBottom) + "\" stroke=\"#dddddd\"/>\n";
    s += "<line x1=\"" + svg_number(kLeft) + "\" y1=\"" + svg_number(p.y) + "\" x2=\"" + svg_number(kRight) +
         "\" y2=\"" + svg_number(p.y) + "\" stroke=\"#dddddd\"/>\n";
    std::string label = t.base;
    if (!t.exponent.empty()) label += "<tspan dy=\"-7\" font-size=\"11\">" + t.exponent + "</tspan>";
    s += "<text x=\"" + svg_number(p.x) + "\" y=\"" + svg_number(kBottom + 24) +
         "\" text-anchor=\"middle\" font-size=\"15\">" + label + "</text>\n";
    s += "<text x=\"" + svg_number(kLeft - 10) + "\" y=\"" + svg_number(p.y + 5) +
         "\" text-anchor=\"end\" font-size=\"15\">" + label + "</text>\n";
  }
  s += "<rect x=\"" + svg_number(kLeft) + "\" y=\"" + svg_number(kTop) + "\" width=\"" + svg_number(kSide) +
       "\" height=\"" + svg_number(kSide) + "\" fill=\"none\" stroke=\"black\"/>\n";
  const Point low = frame.at(frame.minimum(), frame.minimum()), high = frame.at(1, 1);
  s += "<line x1=\"" + svg_number(low.x) + "\" y1=\"" + svg_number(low.y) + "\" x2=\"" + svg_number(high.x) +
       "\" y2=\"" + svg_number(high.y) + "\" stroke=\"#808080\" stroke-dasharray=\"8 6\"/>\n";
  for (std::size_t i = 0; i < series.size(); ++i) {
    s += "<polyline fill=\"none\" stroke-width=\"2\" stroke-linejoin=\"round\" stroke=\"" + svg_colour(colour(i)) +
         "\" points=\"";
    for (const Point& p : trace(frame, series[i].roc)) s += svg_number(p.x) + "," + svg_number(p.y) + " ";
    s += "\"/>\n";
  }
  s += "<text x=\"" + svg_number(kLeft + kSide / 2) + "\" y=\"" + svg_number(kBottom + 60) +
       "\" text-anchor=\"middle\" font-size=\"17\">False positive rate</text>\n";
  s += "<text transform=\"translate(" + svg_number(kLeft - 62) + "," + svg_number(kTop + kSide / 2) +
       ") rotate(-90)\" text-anchor=\"middle\" font-size=\"17\">True positive rate</text>\n";

  // Lower right: below the diagonal, where a better-than-chance curve never goes.
  std::size_t longest = 0;
  for (const RocSeries& r : series) longest = std::max(longest, legend_text(r).size());
  const double row = 22, width = std::min(kSide - 20, 50 + 8.0 * static_cast<double>(longest));
  const double height = row * static_cast<double>(series.size()) + 12;
  const double x0 = kRight - 10 - width, y0 = kBottom - 10 - height;
  s += "<rect x=\"" + svg_number(x0) + "\" y=\"" + svg_number(y0) + "\" width=\"" + svg_number(width) +
       "\" height=\"" + svg_number(height) + "\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#999999\"/>\n";
  for (std::size_t i = 0; i < series.size(); ++i) {
    const double y = y0 + 6 + row * (static_cast<double>(i) + 0.5);
    s += "<line x1=\"" + svg_number(x0 + 8) + "\" y1=\"" + svg_number(y) + "\" x2=\"" + svg_number(x0 + 36) +
         "\" y2=\"" + svg_number(y) + "\" stroke-width=\"3\" stroke=\"" + svg_colour(colour(i)) + "\"/>\n";
    s += "<text x=\"" + svg_number(x0 + 44) + "\" y=\"" + svg_number(y + 5) + "\" font-size=\"14\">" +
         xml_text(legend_text(series[i])) + "</text>\n";
  }
  s += "</svg>\n";
  return s;
}

// ---- PNG ----

cv::Scalar bgr(Rgb c) { return cv::Scalar(c.b, c.g, c.r); }
cv::Point pixel(Point p) { return cv::Point(static_cast<int>(std::lround(p.x)), static_cast<int>(std::lround(p.y))); }

// Hershey fonts have ASCII only: each other UTF-8 character becomes one '?'.
std::string ascii_text(const std::string& text) {
  std::string out;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f)
      out += ch;
    else if ((c & 0xc0) != 0x80)
      out += '?';
  }
  return out;
}

void dashed_line(cv::Mat& image, Point from, Point to, cv::Scalar ink) {
  const double length = std::hypot(to.x - from.x, to.y - from.y);
  constexpr double dash = 8, gap = 6;
  for (double at = 0; at < length; at += dash + gap) {
    const double end = std::min(at + dash, length);
    const Point a{from.x + (to.x - from.x) * at / length, from.y + (to.y - from.y) * at / length};
    const Point b{from.x + (to.x - from.x) * end / length, from.y + (to.y - from.y) * end / length};
    cv::line(image, pixel(a), pixel(b), ink, 1, cv::LINE_AA);
  }
}

// Draws base with a raised, smaller exponent, centred (anchor 0), or ending (anchor 1) at x.
void tick_label(cv::Mat& image, const Tick& t, double x, double baseline, double anchor) {
  constexpr int font = cv::FONT_HERSHEY_SIMPLEX;
  int unused = 0;
  const cv::Size base = cv::getTextSize(t.base, font, 0.5, 1, &unused);
  const cv::Size exponent = t.exponent.empty() ? cv::Size(0, 0) : cv::getTextSize(t.exponent, font, 0.38, 1, &unused);
  const double width = base.width + exponent.width;
  const double left = x - width * (anchor == 0 ? 0.5 : 1.0);
  const auto black = cv::Scalar(0, 0, 0);
  cv::putText(image, t.base, pixel({left, baseline}), font, 0.5, black, 1, cv::LINE_AA);
  if (!t.exponent.empty())
    cv::putText(image, t.exponent, pixel({left + base.width, baseline - 7}), font, 0.38, black, 1, cv::LINE_AA);
}

cv::Mat png(std::span<const RocSeries> series, bool log_scale) {
  const Frame frame(series, log_scale);
  cv::Mat image(kSize, kSize, CV_8UC3, cv::Scalar(255, 255, 255));
  constexpr int font = cv::FONT_HERSHEY_SIMPLEX;
  const auto black = cv::Scalar(0, 0, 0), grid = cv::Scalar(221, 221, 221);
  for (const Tick& t : frame.ticks()) {
    const Point p = frame.at(t.value, t.value);
    cv::line(image, pixel({p.x, kTop}), pixel({p.x, kBottom}), grid, 1);
    cv::line(image, pixel({kLeft, p.y}), pixel({kRight, p.y}), grid, 1);
    tick_label(image, t, p.x, kBottom + 24, 0);
    tick_label(image, t, kLeft - 10, p.y + 5, 1);
  }
  cv::rectangle(image, pixel({kLeft, kTop}), pixel({kRight, kBottom}), black, 1);
  dashed_line(image, frame.at(frame.minimum(), frame.minimum()), frame.at(1, 1), cv::Scalar(128, 128, 128));
  for (std::size_t i = 0; i < series.size(); ++i) {
    std::vector<cv::Point> points;
    for (const Point& p : trace(frame, series[i].roc)) points.push_back(pixel(p));
    if (!points.empty()) cv::polylines(image, points, false, bgr(colour(i)), 2, cv::LINE_AA);
  }

  int baseline = 0;
  const std::string x_title = "False positive rate", y_title = "True positive rate";
  const cv::Size x_size = cv::getTextSize(x_title, font, 0.65, 1, &baseline);
  cv::putText(image, x_title, pixel({kLeft + (kSide - x_size.width) / 2, kBottom + 62}), font, 0.65, black, 1,
              cv::LINE_AA);
  // OpenCV draws text horizontally only: draw the y title on its own strip and turn it.
  const cv::Size y_size = cv::getTextSize(y_title, font, 0.65, 1, &baseline);
  cv::Mat strip(y_size.height + baseline + 4, y_size.width + 4, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::putText(strip, y_title, cv::Point(2, y_size.height + 2), font, 0.65, black, 1, cv::LINE_AA);
  cv::Mat turned;
  cv::rotate(strip, turned, cv::ROTATE_90_COUNTERCLOCKWISE);
  const int tx = static_cast<int>(kLeft) - 80, ty = static_cast<int>(kTop + (kSide - turned.rows) / 2);
  turned.copyTo(image(cv::Rect(tx, ty, turned.cols, turned.rows)));

  std::vector<std::string> texts;
  int longest = 0;
  for (const RocSeries& r : series) {
    texts.push_back(ascii_text(legend_text(r)));
    longest = std::max(longest, cv::getTextSize(texts.back(), font, 0.5, 1, &baseline).width);
  }
  const double row = 22, width = std::min(kSide - 20, 52.0 + longest);
  const double height = row * static_cast<double>(series.size()) + 12;
  const double x0 = kRight - 10 - width, y0 = kBottom - 10 - height;
  cv::rectangle(image, pixel({x0, y0}), pixel({x0 + width, y0 + height}), cv::Scalar(255, 255, 255), cv::FILLED);
  cv::rectangle(image, pixel({x0, y0}), pixel({x0 + width, y0 + height}), cv::Scalar(153, 153, 153), 1);
  for (std::size_t i = 0; i < series.size(); ++i) {
    const double y = y0 + 6 + row * (static_cast<double>(i) + 0.5);
    cv::line(image, pixel({x0 + 8, y}), pixel({x0 + 36, y}), bgr(colour(i)), 3, cv::LINE_AA);
    cv::putText(image, texts[i], pixel({x0 + 44, y + 5}), font, 0.5, black, 1, cv::LINE_AA);
  }
  return image;
}

}  // namespace

void write_roc_svg(const std::string& path, std::span<const RocSeries> series, bool log_scale) {
  const std::string text = svg(series, log_scale);
  write_bytes(path, text.data(), text.size());
}

void write_roc_png(const std::string& path, std::span<const RocSeries> series, bool log_scale) {
  const cv::Mat image = png(series, log_scale);
  // Encoding to memory and writing the bytes ourselves: imwrite picks the format from the file's
  // extension and reports failure only as `false`.
  std::vector<uchar> bytes;
  if (!cv::imencode(".png", image, bytes)) throw core::Error("ROC plot: OpenCV could not encode the PNG for " + path);
  write_bytes(path, reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace aegis::attacks
