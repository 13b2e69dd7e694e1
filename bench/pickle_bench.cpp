// Throughput of the pickle virtual machine on the two shapes that bound it: opcode-dense streams
// (millions of small memoized values) and payload-heavy ones (a few large byte strings).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <span>
#include <vector>

#include "aegis/formats/pickle.h"

namespace {

void put_u64(std::vector<std::uint8_t>& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void put_int(std::vector<std::uint8_t>& out, std::uint32_t v) {
  if (v < 256) {
    out.push_back('K');
    out.push_back(static_cast<std::uint8_t>(v));
  } else if (v < 65536) {
    out.push_back('M');
    out.push_back(static_cast<std::uint8_t>(v));
    out.push_back(static_cast<std::uint8_t>(v >> 8));
  } else {
    out.push_back('J');
    for (int k = 0; k < 4; ++k) out.push_back(static_cast<std::uint8_t>(v >> (8 * k)));
  }
}

// What CPython's protocol 4 pickler writes for [(i, i + 1) for i in range(n)]: a MEMOIZE after
// each tuple, APPENDS in batches of 1000, frames cut between opcodes.
std::vector<std::uint8_t> list_of_small_tuples(std::size_t n) {
  std::vector<std::uint8_t> out = {0x80, 4};
  out.reserve(n * 12);
  std::vector<std::uint8_t> frame = {']', 0x94};
  auto flush = [&] {
    out.push_back(0x95);  // FRAME
    put_u64(out, frame.size());
    out.insert(out.end(), frame.begin(), frame.end());
    frame.clear();
  };
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 1000 == 0) frame.push_back('(');
    put_int(frame, static_cast<std::uint32_t>(i));
    put_int(frame, static_cast<std::uint32_t>(i + 1));
    frame.push_back(0x86);  // TUPLE2
    frame.push_back(0x94);  // MEMOIZE
    if (i % 1000 == 999 || i + 1 == n) {
      frame.push_back('e');  // APPENDS
      if (frame.size() >= 64 * 1024) flush();
    }
  }
  frame.push_back('.');
  flush();
  return out;
}

// A dict of a few large BINBYTES8 payloads, like a pickled set of tensors.
std::vector<std::uint8_t> few_large_payloads(std::size_t count, std::size_t size) {
  std::vector<std::uint8_t> out = {0x80, 5, '}', 0x94, '('};
  for (std::size_t i = 0; i < count; ++i) {
    out.push_back(0x8c);  // SHORT_BINUNICODE key
    out.push_back(6);
    for (char c : {'w', 'e', 'i', 'g', 'h', 't'}) out.push_back(static_cast<std::uint8_t>(c));
    out.push_back(0x94);
    out.push_back(0x8e);  // BINBYTES8
    put_u64(out, size);
    const std::size_t at = out.size();
    out.resize(at + size);
    for (std::size_t k = 0; k < size; ++k) out[at + k] = static_cast<std::uint8_t>(k * 2654435761u >> 13);
    out.push_back(0x94);
  }
  out.push_back('u');
  out.push_back('.');
  return out;
}

// Analyses the same bytes every iteration and reports throughput over them.
void analyse_repeatedly(benchmark::State& state, const std::vector<std::uint8_t>& data) {
  for (auto _ : state) {
    auto report = aegis::formats::analyze_pickle(data);
    if (report.malformed) state.SkipWithError(report.malformed->c_str());
    benchmark::DoNotOptimize(report);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(data.size()));
  state.counters["input_MB"] = static_cast<double>(data.size()) / 1e6;
}

void BM_OpcodeDenseTuples(benchmark::State& state) {
  analyse_repeatedly(state, list_of_small_tuples(static_cast<std::size_t>(state.range(0))));
}
BENCHMARK(BM_OpcodeDenseTuples)->Arg(1 << 20)->Arg(4 << 20)->Unit(benchmark::kMillisecond);

void BM_PayloadHeavy(benchmark::State& state) {
  analyse_repeatedly(state, few_large_payloads(8, static_cast<std::size_t>(state.range(0))));
}
BENCHMARK(BM_PayloadHeavy)->Arg(32 << 20)->Unit(benchmark::kMillisecond);

}  // namespace
