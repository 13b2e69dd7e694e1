// Throughput of the PII/secret detector on one text file, single-threaded:
//   - the regex stage alone, Detector::count_candidates (every rule's pattern in one Hyperscan
//     database, candidates counted, nothing validated): the figure to set against Python's `re` with
//     the same patterns (bench/pii/python_re_baseline.py);
//   - the whole detector, Detector::scan (candidates, validators, context, overlap resolution), line
//     by line as `aegis pii` calls it on a text file (one scan() over 100 MB would stop at the
//     detector's cap on candidates per call).
//
//   pii_regex_bench TEXT_FILE [--repeat N] [--scan-repeat M] [--no-scan] [--rules FILE]...
//
// The file is read into memory first; the times exclude reading it and compiling the rules (printed
// apart). N passes of count_candidates (default 5) and M of scan (default 1); the fastest pass is
// reported, with the median beside it. MB are 10^6 bytes. The last lines are machine-readable for
// bench/pii/compare_regex.sh:
//   engine=aegis-hyperscan bytes=... seconds=... mbps=... matches=... rules=... compile_s=...
//   engine=aegis-scan bytes=... seconds=... mbps=... detections=...
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "aegis/privacy/detector.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Timing {
  double best = 0, median = 0;
};

Timing summarise(std::vector<double> runs) {
  std::sort(runs.begin(), runs.end());
  return {runs.front(), runs[runs.size() / 2]};
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s TEXT_FILE [--repeat N] [--scan-repeat M] [--no-scan] [--rules FILE]...\n"
               "  times Detector::count_candidates (the Hyperscan stage) N times (default 5) and\n"
               "  Detector::scan M times (default 1) over the file, on one thread\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  int repeat = 5, scan_repeat = 1;
  bool do_scan = true;
  aegis::privacy::DetectorOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--repeat" || arg == "--scan-repeat") {
      const char* v = value();
      if (!v || std::atoi(v) < 1) return usage(argv[0]);
      (arg == "--repeat" ? repeat : scan_repeat) = std::atoi(v);
    } else if (arg == "--no-scan") {
      do_scan = false;
    } else if (arg == "--rules") {
      const char* v = value();
      if (!v) return usage(argv[0]);
      options.rule_files.emplace_back(v);
    } else if (arg == "-h" || arg == "--help" || !path.empty() || arg.rfind("--", 0) == 0) {
      return usage(argv[0]);
    } else {
      path = arg;
    }
  }
  if (path.empty()) return usage(argv[0]);

  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "pii_regex_bench: cannot read %s: %s\n", path.c_str(), std::strerror(errno));
    return 2;
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string text = std::move(buffer).str();
  const double mb = double(text.size()) / 1e6;

  try {
    const auto compile_start = Clock::now();
    const aegis::privacy::Detector detector(options);
    const double compile_s = seconds_since(compile_start);
    std::printf("aegis detector: %zu rules compiled in %.3f s; %s, %.1f MB\n", detector.rule_count(), compile_s,
                path.c_str(), mb);

    std::vector<double> runs;
    std::size_t candidates = 0;
    for (int r = 0; r < repeat; ++r) {
      const auto start = Clock::now();
      candidates = detector.count_candidates(text);
      runs.push_back(seconds_since(start));
      std::printf("  count_candidates pass %d: %.3f s, %.1f MB/s, %zu candidates\n", r + 1, runs.back(),
                  mb / runs.back(), candidates);
    }
    const auto regex = summarise(runs);

    Timing scan{};
    std::size_t detections = 0;
    if (do_scan) {
      runs.clear();
      for (int r = 0; r < scan_repeat; ++r) {
        const auto start = Clock::now();
        detections = 0;
        for (std::size_t at = 0; at < text.size();) {
          std::size_t end = text.find('\n', at);
          if (end == std::string::npos) end = text.size();
          detections += detector.scan(std::string_view(text).substr(at, end - at)).size();
          at = end + 1;
        }
        runs.push_back(seconds_since(start));
        std::printf("  scan pass %d: %.3f s, %.1f MB/s, %zu detections\n", r + 1, runs.back(), mb / runs.back(),
                    detections);
      }
      scan = summarise(runs);
    }

    std::printf("regex stage (Hyperscan): best %.3f s = %.1f MB/s (median %.1f MB/s) on one thread\n", regex.best,
                mb / regex.best, mb / regex.median);
    if (do_scan)
      std::printf("full scan, line by line: best %.3f s = %.1f MB/s (median %.1f MB/s) on one thread\n", scan.best,
                  mb / scan.best, mb / scan.median);
    std::printf("engine=aegis-hyperscan bytes=%zu seconds=%.4f mbps=%.2f matches=%zu rules=%zu compile_s=%.3f\n",
                text.size(), regex.best, mb / regex.best, candidates, detector.rule_count(), compile_s);
    if (do_scan)
      std::printf("engine=aegis-scan bytes=%zu seconds=%.4f mbps=%.2f detections=%zu\n", text.size(), scan.best,
                  mb / scan.best, detections);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pii_regex_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
