// Latency of the input guard on one core: every tier (normalisation, decoders, Hyperscan signatures,
// the learned model) on 4 KB prompts built from the labelled LLM data, one call at a time, as a
// gateway would run it per request. Prints percentiles as JSON.
//   guard_latency DATA.jsonl [--bytes 4096] [--calls 20000] [--model FILE] [--label 0|1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "aegis/guard/evaluation.h"
#include "aegis/guard/input_guard.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: guard_latency DATA.jsonl [--bytes N] [--calls N] [--model FILE]\n";
    return 2;
  }
  std::size_t bytes = 4096, calls = 20000;
  std::string model;
  int label = -1;  // -1: all rows; 0: benign rows only; 1: attacks only
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--bytes") bytes = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--calls") calls = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--model") model = argv[i + 1];
    else if (flag == "--label") label = std::atoi(argv[i + 1]);
  }
  auto rows = aegis::guard::load_labelled_jsonl(argv[1]);
  if (label >= 0) std::erase_if(rows, [&](const aegis::guard::LabelledText& r) { return r.label != label; });
  // prompts of exactly `bytes` bytes: consecutive texts joined until the size is reached
  std::vector<std::string> prompts;
  std::string current;
  for (std::size_t k = 0; prompts.size() < 512; ++k) {
    current += rows[k % rows.size()].text;
    current += '\n';
    if (current.size() >= bytes) {
      current.resize(bytes);
      prompts.push_back(current);
      current.clear();
    }
  }
  aegis::guard::InputGuardOptions options;
  options.model_file = model;
  const aegis::guard::InputGuard guard(options);
  for (const auto& p : prompts) (void)guard.scan(p);  // warm caches and thread-local scratch
  std::vector<double> micros;
  micros.reserve(calls);
  std::size_t flagged = 0;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < calls; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    flagged += guard.scan(prompts[i % prompts.size()]).flagged ? 1 : 0;
    micros.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(micros.begin(), micros.end());
  auto pct = [&](double q) { return micros[std::min(micros.size() - 1, static_cast<std::size_t>(q * static_cast<double>(micros.size())))]; };
  std::printf(
      "{\"label\": %d, \"prompt_bytes\": %zu, \"calls\": %zu, \"flagged\": %zu, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
      "\"max_us\": %.1f, \"prompts_per_s\": %.0f, \"mb_per_s\": %.1f}\n",
      label, bytes, calls, flagged, pct(0.5), pct(0.9), pct(0.99), micros.back(), static_cast<double>(calls) / total,
      static_cast<double>(calls * bytes) / total / 1e6);
  return 0;
}
