// One round of secure aggregation (Bonawitz et al. 2017) in one process, every message encoded and
// decoded as on the wire: participants' and the aggregator's compute time and the bytes each side
// sends, against plain aggregation (each participant uploads its m float32 values), for n
// participants, m values and a dropout rate (participants that vanish after sharing their keys, the
// case that costs the aggregator most: it must rebuild their masks against every survivor).
//   secagg_round [M] [N ...]      e.g. secagg_round 101770 10 50
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "aegis/federated/secure_aggregation.h"

namespace fl = aegis::federated;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Measure {
  double client_seconds = 0;   // mean per surviving participant, all four stages
  double server_seconds = 0;   // everything the aggregator computes (decoding included)
  double client_up = 0;        // bytes a surviving participant sends, mean
  double client_down = 0;      // bytes it receives (directory, shares, unmask request), mean
  bool exact = false;          // the sum equals the survivors' sum
};

Measure run_round(std::size_t n, std::size_t m, double dropout, std::uint32_t seed) {
  const std::string round_id = "bench-round-" + std::to_string(seed);
  const auto threshold = static_cast<std::uint32_t>(std::max<std::size_t>(2, (n * 2 + 2) / 3));
  fl::SecAggParams params{round_id, threshold, m};
  std::mt19937 rng(seed);
  std::vector<std::vector<std::uint32_t>> inputs(n, std::vector<std::uint32_t>(m));
  for (auto& input : inputs)
    for (auto& v : input) v = rng();
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "p%04zu", i);
    ids.emplace_back(name);
  }
  const auto dropped_count = static_cast<std::size_t>(dropout * static_cast<double>(n));
  std::vector<double> client_time(n, 0), up(n, 0), down(n, 0);
  double server_time = 0;
  std::vector<fl::SecAggClient> clients;
  for (std::size_t i = 0; i < n; ++i) clients.emplace_back(ids[i], params);
  fl::SecAggServer server(params);

  for (std::size_t i = 0; i < n; ++i) {
    auto t = Clock::now();
    const auto bytes = clients[i].advertise().encode();
    client_time[i] += seconds_since(t);
    up[i] += static_cast<double>(bytes.size());
    t = Clock::now();
    server.receive_keys(fl::AdvertiseKeys::decode(bytes));
    server_time += seconds_since(t);
  }
  auto t = Clock::now();
  const auto directory = server.directory().encode();
  server_time += seconds_since(t);
  for (std::size_t i = 0; i < n; ++i) {
    down[i] += static_cast<double>(directory.size());
    t = Clock::now();
    const auto bytes = clients[i].share_keys(fl::KeyDirectory::decode(directory)).encode();
    client_time[i] += seconds_since(t);
    up[i] += static_cast<double>(bytes.size());
    t = Clock::now();
    server.receive_shares(fl::ShareUpload::decode(bytes));
    server_time += seconds_since(t);
  }
  // The last dropped_count participants vanish here, after sharing.
  const std::size_t survivors = n - dropped_count;
  for (std::size_t i = 0; i < survivors; ++i) {
    t = Clock::now();
    const auto delivery = server.delivery_for(ids[i]).encode();
    server_time += seconds_since(t);
    down[i] += static_cast<double>(delivery.size());
    t = Clock::now();
    const auto bytes = clients[i].masked_input(fl::ShareDelivery::decode(delivery), inputs[i]).encode();
    client_time[i] += seconds_since(t);
    up[i] += static_cast<double>(bytes.size());
    t = Clock::now();
    server.receive_masked(fl::MaskedInput::decode(bytes));
    server_time += seconds_since(t);
  }
  t = Clock::now();
  const auto request = server.unmask_request().encode();
  server_time += seconds_since(t);
  for (std::size_t i = 0; i < survivors; ++i) {
    down[i] += static_cast<double>(request.size());
    t = Clock::now();
    const auto bytes = clients[i].unmask(fl::UnmaskRequest::decode(request)).encode();
    client_time[i] += seconds_since(t);
    up[i] += static_cast<double>(bytes.size());
    t = Clock::now();
    server.receive_unmask(fl::UnmaskResponse::decode(bytes));
    server_time += seconds_since(t);
  }
  t = Clock::now();
  const auto sum = server.finish();
  server_time += seconds_since(t);

  std::vector<std::uint32_t> expected(m, 0);
  for (std::size_t i = 0; i < survivors; ++i)
    for (std::size_t k = 0; k < m; ++k) expected[k] += inputs[i][k];
  Measure measure;
  measure.exact = sum == expected;
  measure.server_seconds = server_time;
  for (std::size_t i = 0; i < survivors; ++i) {
    measure.client_seconds += client_time[i] / static_cast<double>(survivors);
    measure.client_up += up[i] / static_cast<double>(survivors);
    measure.client_down += down[i] / static_cast<double>(survivors);
  }
  return measure;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t m = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 101770;
  std::vector<std::size_t> sizes;
  for (int i = 2; i < argc; ++i) sizes.push_back(std::strtoull(argv[i], nullptr, 10));
  if (sizes.empty()) sizes = {10, 50};
  std::printf("vector of %zu values; plain aggregation: each participant uploads %zu bytes (float32), the aggregator sums n vectors\n\n", m,
              m * 4);
  std::printf("| n | dropout | participant s | aggregator s | participant up (bytes) | expansion vs plain | participant down (bytes, besides the model) | sum exact |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto n : sizes) {
    // Plain: the aggregator adds n float vectors.
    std::vector<std::vector<float>> plain(n, std::vector<float>(m, 1.0f));
    std::vector<float> total(m, 0);
    const auto t = Clock::now();
    for (const auto& v : plain)
      for (std::size_t k = 0; k < m; ++k) total[k] += v[k];
    const double plain_seconds = seconds_since(t);
    std::printf("| %zu | plain | 0 | %.4f | %zu | 1.00 | 0 | - |\n", n, plain_seconds, m * 4);
    for (const double dropout : {0.0, 0.1, 0.3}) {
      const auto r = run_round(n, m, dropout, static_cast<std::uint32_t>(n * 100 + dropout * 10));
      std::printf("| %zu | %.0f%% | %.3f | %.3f | %.0f | %.3f | %.0f | %s |\n", n, dropout * 100, r.client_seconds, r.server_seconds,
                  r.client_up, r.client_up / static_cast<double>(m * 4), r.client_down, r.exact ? "yes" : "NO");
      std::fflush(stdout);
    }
  }
  return 0;
}
