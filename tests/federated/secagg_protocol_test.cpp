// The secure-aggregation protocol end to end, with every message encoded and decoded as a transport
// would: exact sums with and without dropouts, a server that never holds an unmasked input, and
// refusals (with clear errors) of wrong, replayed, late, forged and malformed messages.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/federated/secure_aggregation.h"

namespace aegis::federated {
namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const core::Error& e) {
    return std::string(e.what()) + " | hint: " + e.hint();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected core::Error, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected core::Error, nothing was thrown";
  return {};
}

// Runs the statement and expects a core::Error whose message or hint mentions the fragment.
#define EXPECT_ERROR_HAS(statement, fragment)                                            \
  do {                                                                                   \
    const std::string message_ = error_of([&] { statement; });                           \
    EXPECT_NE(message_.find(fragment), std::string::npos)                                \
        << "error \"" << message_ << "\" does not mention \"" << (fragment) << "\"";     \
  } while (0)

const std::vector<std::string> kNames = {"alice", "bob", "carol", "dave", "erin", "frank", "grace"};

// One round: clients, server and the bytes between them. Every message a client produces is
// encoded, appended to `received` (all the server ever gets) and decoded on the server's side;
// every message the server produces is encoded and decoded on the client's side.
class Harness {
 public:
  Harness(std::size_t n, std::uint32_t threshold, std::size_t length, std::string round = "round-7")
      : params{std::move(round), threshold, length}, fp{1.0, static_cast<std::uint32_t>(n)}, server(params) {
    for (std::size_t u = 0; u < n; ++u) {
      ids.push_back(kNames.at(u));
      clients.emplace_back(ids.back(), params);
      std::vector<float> update(length);
      // Smooth, distinct, well inside the clip: what a model update looks like to the protocol.
      for (std::size_t i = 0; i < length; ++i)
        update[i] = static_cast<float>(0.9 * std::sin(0.37 * static_cast<double>(i) + 1.1 * static_cast<double>(u) + 0.5));
      std::vector<std::uint32_t> words(length);
      encode_fixed_point(update, fp, words);
      updates.push_back(std::move(update));
      inputs.push_back(std::move(words));
      active.push_back(true);
    }
  }

  template <typename M>
  M to_server(const M& message) {
    auto bytes = message.encode();
    received.insert(received.end(), bytes.begin(), bytes.end());
    received_messages.push_back(bytes);
    return M::decode(bytes);
  }
  template <typename M>
  static M to_client(const M& message) {
    return M::decode(message.encode());
  }

  // Each stage: participants in `silent` drop out before sending that stage's message.
  void advertise(const std::set<std::size_t>& silent = {}) {
    for (std::size_t u = 0; u < clients.size(); ++u) {
      auto message = clients[u].advertise();
      advertised.push_back(message);
      if (silent.count(u)) {
        active[u] = false;
        continue;
      }
      server.receive_keys(to_server(message));
    }
    directory = to_client(server.directory());
  }
  void share(const std::set<std::size_t>& silent = {}) {
    for (std::size_t u = 0; u < clients.size(); ++u) {
      if (!active[u]) continue;
      if (silent.count(u)) {
        active[u] = false;
        continue;
      }
      uploads.push_back(clients[u].share_keys(directory));
      server.receive_shares(to_server(uploads.back()));
    }
  }
  void mask(const std::set<std::size_t>& silent = {}) {
    for (std::size_t u = 0; u < clients.size(); ++u) {
      if (!active[u]) continue;
      if (silent.count(u)) {
        active[u] = false;
        continue;
      }
      deliveries[u] = to_client(server.delivery_for(ids[u]));
      masked.push_back(clients[u].masked_input(deliveries[u], inputs[u]));
      server.receive_masked(to_server(masked.back()));
    }
  }
  void unmask(const std::set<std::size_t>& silent = {}) {
    request = to_client(server.unmask_request());
    for (std::size_t u = 0; u < clients.size(); ++u) {
      if (!active[u] || silent.count(u)) continue;
      responses.push_back(clients[u].unmask(request));
      server.receive_unmask(to_server(responses.back()));
    }
  }
  std::vector<std::uint32_t> expected_sum(const std::set<std::size_t>& contributors) const {
    std::vector<std::uint32_t> sum(params.vector_length, 0);
    for (auto u : contributors)
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += inputs[u][i];
    return sum;
  }

  SecAggParams params;
  FixedPoint fp;
  SecAggServer server;
  std::vector<std::string> ids;
  std::vector<SecAggClient> clients;
  std::vector<std::vector<float>> updates;
  std::vector<std::vector<std::uint32_t>> inputs;
  std::vector<bool> active;
  std::vector<std::uint8_t> received;                             // every byte, in order
  std::vector<std::vector<std::uint8_t>> received_messages;       // the same, message by message
  std::vector<AdvertiseKeys> advertised;
  KeyDirectory directory;
  std::vector<ShareUpload> uploads;
  std::map<std::size_t, ShareDelivery> deliveries;
  std::vector<MaskedInput> masked;
  UnmaskRequest request;
  std::vector<UnmaskResponse> responses;
};

double pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const double n = static_cast<double>(a.size());
  double ma = 0, mb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ma += a[i] / n;
    mb += b[i] / n;
  }
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

std::vector<double> as_signed(const std::vector<std::uint32_t>& words) {
  std::vector<double> out;
  for (auto w : words) out.push_back(static_cast<std::int32_t>(w));
  return out;
}
std::vector<double> as_unsigned(const std::vector<std::uint32_t>& words) { return {words.begin(), words.end()}; }

std::vector<std::uint8_t> little_endian_bytes(const std::vector<std::uint32_t>& words) {
  std::vector<std::uint8_t> out;
  for (auto w : words)
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(w >> (8 * i)));
  return out;
}

// Every 16-byte window of the stream, at every byte offset.
std::unordered_set<std::string> windows_of(const std::vector<std::uint8_t>& stream) {
  std::unordered_set<std::string> out;
  for (std::size_t i = 0; i + 16 <= stream.size(); ++i)
    out.emplace(reinterpret_cast<const char*>(stream.data() + i), 16);
  return out;
}
// How many 4-word runs of the input appear anywhere in the stream's windows.
std::size_t runs_found(const std::unordered_set<std::string>& windows, const std::vector<std::uint32_t>& input) {
  const auto bytes = little_endian_bytes(input);
  std::size_t found = 0;
  for (std::size_t i = 0; i + 16 <= bytes.size(); i += 4)
    found += windows.count(std::string(reinterpret_cast<const char*>(bytes.data() + i), 16));
  return found;
}

// ---- correct rounds ----

TEST(SecAggProtocol, FiveParticipantsGetTheExactSum) {
  Harness h(5, 3, 1000);
  h.advertise();
  h.share();
  h.mask();
  h.unmask();
  ASSERT_TRUE(h.server.can_finish());
  const auto sum = h.server.finish();
  EXPECT_EQ(sum, h.expected_sum({0, 1, 2, 3, 4}));  // exact, mod 2^32

  std::vector<float> decoded(sum.size());
  decode_fixed_point(sum, h.fp, decoded);
  const double quantisation = 5 * 0.5 / h.fp.scale();
  for (std::size_t i = 0; i < sum.size(); ++i) {
    double plain = 0;
    for (const auto& update : h.updates) plain += update[i];
    ASSERT_NEAR(decoded[i], plain, quantisation + 1e-6) << "element " << i;
  }
  EXPECT_EQ(h.server.survivors(), (std::vector<std::string>{"alice", "bob", "carol", "dave", "erin"}));
  EXPECT_TRUE(h.request.dropped.empty());
}

TEST(SecAggProtocol, OneDropoutAfterTheShareStageGivesTheSumOfSurvivors) {
  Harness h(5, 3, 300);
  h.advertise();
  h.share();
  h.mask({2});  // carol shared keys, then vanished
  h.unmask();
  EXPECT_EQ(h.request.dropped, std::vector<std::string>{"carol"});
  EXPECT_EQ(h.server.finish(), h.expected_sum({0, 1, 3, 4}));
}

TEST(SecAggProtocol, TwoDropoutsAfterTheShareStageGiveTheSumOfSurvivors) {
  Harness h(5, 3, 300);
  h.advertise();
  h.share();
  h.mask({0, 3});  // alice sorts first and dave in the middle: both mask signs are exercised
  h.unmask();
  EXPECT_EQ(h.request.survivors, (std::vector<std::string>{"bob", "carol", "erin"}));
  EXPECT_EQ(h.request.dropped, (std::vector<std::string>{"alice", "dave"}));
  for (const auto& response : h.responses) {
    EXPECT_EQ(response.self_mask_shares.size(), 3u);
    EXPECT_EQ(response.key_shares.size(), 2u);
  }
  EXPECT_EQ(h.server.finish(), h.expected_sum({1, 2, 4}));
}

TEST(SecAggProtocol, DropoutsAtEveryStageStillGiveTheSumOfThoseWhoSentInputs) {
  Harness h(7, 3, 200);
  h.advertise({6});  // grace never advertises: not in the directory
  h.share({5});      // frank advertises but never uploads shares: not in U2
  h.mask({1});       // bob uploads shares, then vanishes: dropped, his pairwise masks rebuilt
  h.unmask({4});     // erin sends her masked input but not her unmask response
  EXPECT_EQ(h.directory.participants.size(), 6u);
  EXPECT_EQ(h.request.dropped, std::vector<std::string>{"bob"});
  EXPECT_EQ(h.responses.size(), 3u);
  ASSERT_TRUE(h.server.can_finish());
  EXPECT_EQ(h.server.finish(), h.expected_sum({0, 2, 3, 4}));  // erin's input counts: it was sent
  EXPECT_ERROR_HAS(h.server.delivery_for("frank"), "did not upload");
}

TEST(SecAggProtocol, TooManyDropoutsIsAClearError) {
  Harness h(5, 3, 50);
  h.advertise();
  h.share();
  h.mask({0, 1, 2});
  EXPECT_ERROR_HAS(h.server.unmask_request(), "only 2 of the 5 participants that shared keys sent masked inputs");
  EXPECT_ERROR_HAS(h.server.unmask_request(), "dropped out");
  EXPECT_FALSE(h.server.can_finish());
  EXPECT_ERROR_HAS(h.server.finish(), "before the unmask request");

  Harness few(5, 3, 50);
  few.advertise();
  few.share();
  few.mask();
  few.unmask({0, 1, 2});  // two responses for a threshold of three
  EXPECT_FALSE(few.server.can_finish());
  EXPECT_ERROR_HAS(few.server.finish(), "only 2 unmask responses");

  Harness sparse(5, 3, 50);
  sparse.server.receive_keys(sparse.clients[3].advertise());
  sparse.server.receive_keys(sparse.clients[4].advertise());
  EXPECT_ERROR_HAS(sparse.server.directory(), "only 2 participants advertised keys");
}

// ---- what the server sees ----

TEST(SecAggProtocol, ServerNeverHoldsAnUnmaskedInput) {
  Harness h(5, 3, 4096);
  h.advertise();
  h.share();
  h.mask();
  h.unmask();
  const auto sum = h.server.finish();
  ASSERT_EQ(sum, h.expected_sum({0, 1, 2, 3, 4}));

  // Every vector the server received, decoded from the recorded bytes as the server decoded it.
  std::vector<MaskedInput> seen;
  for (const auto& bytes : h.received_messages)
    if (peek_message_type(bytes) == SecAggMessageType::MaskedInput) seen.push_back(MaskedInput::decode(bytes));
  ASSERT_EQ(seen.size(), 5u);

  // The detector below finds an input that is in the stream: it can fail.
  const auto windows = windows_of(h.received);
  auto planted = h.received;
  const auto plain = little_endian_bytes(h.inputs[2]);
  planted.insert(planted.end(), plain.begin(), plain.end());
  EXPECT_EQ(runs_found(windows_of(planted), h.inputs[2]), 4096u - 3);
  EXPECT_NEAR(pearson(as_signed(h.inputs[2]), as_signed(h.inputs[2])), 1.0, 1e-9);

  for (std::size_t u = 0; u < 5; ++u) {
    const auto& input = h.inputs[u];
    // No run of four consecutive input words appears anywhere in what the server received.
    EXPECT_EQ(runs_found(windows, input), 0u) << h.ids[u];
    for (const auto& m : seen) {
      EXPECT_NE(m.masked, input);
      // With 4096 words, |r| of independent vectors exceeds 0.1 with probability about 1e-10.
      EXPECT_LT(std::abs(pearson(as_signed(m.masked), as_signed(input))), 0.1) << h.ids[u] << " vs " << m.participant;
      EXPECT_LT(std::abs(pearson(as_unsigned(m.masked), as_unsigned(input))), 0.1) << h.ids[u] << " vs " << m.participant;
      std::size_t equal_words = 0;
      for (std::size_t i = 0; i < input.size(); ++i) equal_words += m.masked[i] == input[i];
      EXPECT_LT(equal_words, 3u) << h.ids[u] << " vs " << m.participant;
    }
  }
  // Without the unmasking the masked inputs do not add up to the sum: the self masks hide it.
  std::vector<std::uint32_t> raw(sum.size(), 0);
  for (const auto& m : seen)
    for (std::size_t i = 0; i < raw.size(); ++i) raw[i] += m.masked[i];
  EXPECT_NE(raw, sum);
  // The server asked for, and got, self-mask shares only: nobody dropped, so no mask key was revealed.
  for (const auto& response : h.responses) {
    EXPECT_EQ(response.self_mask_shares.size(), 5u);
    EXPECT_TRUE(response.key_shares.empty());
  }
}

// ---- refusals ----

TEST(SecAggProtocol, WrongRoundIdIsRefused) {
  Harness h(3, 2, 8);
  auto keys = h.clients[0].advertise();
  keys.round_id = "round-6";
  EXPECT_ERROR_HAS(h.server.receive_keys(keys), "is for round 'round-6', this server runs round 'round-7'");
  keys.round_id = "round-7";
  h.server.receive_keys(keys);
  h.server.receive_keys(h.clients[1].advertise());
  h.server.receive_keys(h.clients[2].advertise());
  auto directory = h.server.directory();
  auto stale = directory;
  stale.round_id = "round-6";
  EXPECT_ERROR_HAS(h.clients[0].share_keys(stale), "round 'round-6'");

  std::vector<ShareUpload> uploads;
  for (auto& c : h.clients) uploads.push_back(c.share_keys(directory));
  auto upload = uploads[0];
  upload.round_id = "other";
  EXPECT_ERROR_HAS(h.server.receive_shares(upload), "round 'other'");
  for (const auto& u : uploads) h.server.receive_shares(u);

  auto delivery = h.server.delivery_for("alice");
  auto foreign = delivery;
  foreign.round_id = "other";
  EXPECT_ERROR_HAS(h.clients[0].masked_input(foreign, h.inputs[0]), "round 'other'");
  auto m = h.clients[0].masked_input(delivery, h.inputs[0]);
  m.round_id = "other";
  EXPECT_ERROR_HAS(h.server.receive_masked(m), "round 'other'");
}

TEST(SecAggProtocol, ReplayedMessagesAreRefused) {
  Harness h(3, 2, 8);
  h.advertise();
  h.share();
  EXPECT_ERROR_HAS(h.server.receive_shares(h.uploads[1]), "duplicate");
  h.mask();
  EXPECT_ERROR_HAS(h.server.receive_masked(MaskedInput::decode(h.masked[0].encode())), "duplicate");
  h.unmask({2});
  EXPECT_ERROR_HAS(h.server.receive_unmask(h.responses[0]), "duplicate");
  // A replay still counted once: the sum is right.
  EXPECT_EQ(h.server.finish(), h.expected_sum({0, 1, 2}));

  // While keys are still being collected: the same message twice, and the same keys under
  // another name.
  Harness k(3, 2, 8);
  auto keys = k.clients[0].advertise();
  k.server.receive_keys(k.to_server(keys));
  EXPECT_ERROR_HAS(k.server.receive_keys(k.to_server(keys)), "duplicate (replayed message?)");
  keys.participant = "mallory";
  EXPECT_ERROR_HAS(k.server.receive_keys(keys), "reuses a public key");
}

TEST(SecAggProtocol, LateMessagesAreRefused) {
  Harness h(5, 2, 8);
  auto late_keys = h.clients[4].advertise();
  for (std::size_t u = 0; u < 4; ++u) h.server.receive_keys(h.clients[u].advertise());
  auto directory = h.server.directory();
  EXPECT_ERROR_HAS(h.server.receive_keys(late_keys), "arrived late: the key directory is already published");
  EXPECT_EQ(h.server.directory(), directory) << "the directory, once published, does not change";

  std::vector<ShareUpload> uploads;
  for (std::size_t u = 0; u < 4; ++u) uploads.push_back(h.clients[u].share_keys(directory));
  for (std::size_t u = 0; u < 3; ++u) h.server.receive_shares(uploads[u]);
  auto first = h.server.delivery_for("alice");  // closes the share stage
  EXPECT_ERROR_HAS(h.server.receive_shares(uploads[3]), "arrived late: shares have already been delivered");
  EXPECT_ERROR_HAS(h.server.delivery_for("dave"), "did not upload");

  std::vector<MaskedInput> masked;
  masked.push_back(h.clients[0].masked_input(first, h.inputs[0]));
  for (std::size_t u = 1; u < 3; ++u) masked.push_back(h.clients[u].masked_input(h.server.delivery_for(h.ids[u]), h.inputs[u]));
  h.server.receive_masked(masked[0]);
  h.server.receive_masked(masked[1]);
  const auto request = h.server.unmask_request();  // closes the masked-input stage
  EXPECT_ERROR_HAS(h.server.receive_masked(masked[2]), "arrived late: the unmask request is already out");
  EXPECT_EQ(request.dropped, std::vector<std::string>{"carol"});
  EXPECT_EQ(h.server.unmask_request(), request) << "every survivor gets the same request";

  for (std::size_t u = 0; u < 2; ++u) h.server.receive_unmask(h.clients[u].unmask(request));
  EXPECT_EQ(h.server.finish(), h.expected_sum({0, 1}));
  // carol was dropped: she refuses to reveal anything for a request that does not count her in.
  EXPECT_ERROR_HAS(h.clients[2].unmask(request), "not among the survivors");
}

TEST(SecAggProtocol, StagesOutOfOrderAreRefused) {
  Harness h(3, 2, 8);
  auto early_masked = MaskedInput{"round-7", "alice", std::vector<std::uint32_t>(8, 0)};
  EXPECT_ERROR_HAS(h.server.receive_masked(early_masked), "early");
  EXPECT_ERROR_HAS(h.server.receive_shares(ShareUpload{"round-7", "alice", {}}), "early");
  EXPECT_ERROR_HAS(h.server.delivery_for("alice"), "before the key directory");
  EXPECT_ERROR_HAS(h.server.unmask_request(), "before");
  EXPECT_ERROR_HAS(h.clients[0].share_keys(KeyDirectory{}), "out of order");
  EXPECT_ERROR_HAS(h.clients[0].unmask(UnmaskRequest{}), "out of order");
  h.advertise();
  EXPECT_ERROR_HAS(h.clients[0].advertise(), "out of order");
  h.share();
  h.mask();
  h.unmask();
  EXPECT_ERROR_HAS(h.clients[0].unmask(h.request), "out of order");
  h.server.finish();
  EXPECT_ERROR_HAS(h.server.finish(), "twice");
  EXPECT_ERROR_HAS(h.server.receive_unmask(h.responses[0]), "late");
}

TEST(SecAggProtocol, WrongVectorLengthIsRefused) {
  Harness h(3, 2, 16);
  h.advertise();
  h.share();
  auto delivery = h.server.delivery_for("alice");
  std::vector<std::uint32_t> short_input(15, 1);
  EXPECT_ERROR_HAS(h.clients[0].masked_input(delivery, short_input), "input has 15 words, the round aggregates vectors of 16");
  auto m = h.clients[0].masked_input(delivery, h.inputs[0]);  // the refusal left the client usable
  m.masked.push_back(0);
  EXPECT_ERROR_HAS(h.server.receive_masked(m), "has 17 words");
  EXPECT_ERROR_HAS(SecAggClient("x", SecAggParams{"r", 2, 0}), "vector length");
  EXPECT_ERROR_HAS(SecAggServer(SecAggParams{"r", 2, kMaxVectorLength + 1}), "vector length");
  EXPECT_ERROR_HAS(SecAggServer(SecAggParams{"r", 1, 4}), "threshold of at least 2");
}

TEST(SecAggProtocol, ForgedSharesAreRefused) {
  Harness h(4, 2, 8);
  h.advertise();
  h.share();
  const auto genuine = h.server.delivery_for("bob");
  ASSERT_EQ(genuine.shares.size(), 3u);
  for (std::size_t byte : {0u, 13u, 60u, static_cast<unsigned>(kSealedShareBytes - 1)}) {
    auto forged = genuine;
    forged.shares[1].ciphertext[byte] ^= 0x01;
    EXPECT_ERROR_HAS(h.clients[1].masked_input(forged, h.inputs[1]), "the share from 'carol' failed authentication");
  }
  // A real share passed off as another sender's (the associated data binds the sender).
  auto misattributed = genuine;
  misattributed.shares[0].from = "dave";
  misattributed.shares.pop_back();
  EXPECT_ERROR_HAS(h.clients[1].masked_input(misattributed, h.inputs[1]), "failed authentication");
  // A share meant for someone else.
  auto other = h.server.delivery_for("carol");
  auto misaddressed = genuine;
  misaddressed.shares[0] = other.shares[0];
  EXPECT_ERROR_HAS(h.clients[1].masked_input(misaddressed, h.inputs[1]), "addressed to 'carol'");
  misaddressed.shares[0].to = "bob";
  EXPECT_ERROR_HAS(h.clients[1].masked_input(misaddressed, h.inputs[1]), "failed authentication");
  auto doubled = genuine;
  doubled.shares[1] = doubled.shares[0];
  EXPECT_ERROR_HAS(h.clients[1].masked_input(doubled, h.inputs[1]), "two shares from");
  auto unknown = genuine;
  unknown.shares[0].from = "mallory";
  EXPECT_ERROR_HAS(h.clients[1].masked_input(unknown, h.inputs[1]), "not in the round's key directory");
  // The genuine delivery still works after all the refusals.
  EXPECT_EQ(h.clients[1].masked_input(genuine, h.inputs[1]).masked.size(), 8u);
}

TEST(SecAggProtocol, ClientRefusesBadDirectories) {
  Harness h(4, 3, 8);
  h.advertise();
  const auto good = h.directory;
  auto d = good;
  d.participants.erase(d.participants.begin());
  EXPECT_ERROR_HAS(h.clients[0].share_keys(d), "does not list this participant");
  d = good;
  d.participants[0].s_public = d.participants[1].s_public;
  EXPECT_ERROR_HAS(h.clients[2].share_keys(d), "appears twice");
  d = good;
  d.participants[0].c_public[5] ^= 1;
  EXPECT_ERROR_HAS(h.clients[0].share_keys(d), "keys it did not advertise");
  d = good;
  std::swap(d.participants[1], d.participants[2]);
  EXPECT_ERROR_HAS(h.clients[0].share_keys(d), "not sorted");
  d = good;
  d.participants.resize(2);
  EXPECT_ERROR_HAS(h.clients[0].share_keys(d), "threshold is 3");
  d = good;
  d.threshold = 2;
  EXPECT_ERROR_HAS(h.clients[0].share_keys(d), "threshold 2");
  EXPECT_EQ(h.clients[0].share_keys(good).shares.size(), 3u);
}

TEST(SecAggProtocol, ServerRefusesBadShareUploads) {
  Harness h(4, 2, 8);
  h.advertise();
  auto upload = h.clients[0].share_keys(h.directory);
  auto u = upload;
  u.shares.pop_back();
  EXPECT_ERROR_HAS(h.server.receive_shares(u), "expected exactly one for each of the 3 other participants");
  u = upload;
  u.shares[0].to = "mallory";
  EXPECT_ERROR_HAS(h.server.receive_shares(u), "not in the directory");
  u = upload;
  u.shares[1].to = u.shares[0].to;
  EXPECT_ERROR_HAS(h.server.receive_shares(u), "two shares for");
  u = upload;
  u.shares[0].to = "alice";
  EXPECT_ERROR_HAS(h.server.receive_shares(u), "addressed to its sender");
  u = upload;
  u.shares[0].from = "bob";
  EXPECT_ERROR_HAS(h.server.receive_shares(u), "claims to come from 'bob'");
  u = upload;
  u.shares[0].ciphertext.pop_back();
  EXPECT_ERROR_HAS(h.server.receive_shares(u), "a sealed share is");
  u = upload;
  u.participant = "mallory";
  EXPECT_ERROR_HAS(h.server.receive_shares(u), "not in the key directory");
  h.server.receive_shares(upload);
  EXPECT_ERROR_HAS(h.server.delivery_for("alice"), "only 1 participants uploaded shares");
}

TEST(SecAggProtocol, ClientRefusesUnsafeUnmaskRequests) {
  Harness h(5, 3, 8);
  h.advertise();
  h.share({4});  // erin never uploads: she is outside everyone's U2
  h.mask({3});   // dave drops after sharing
  const auto good = Harness::to_client(h.server.unmask_request());
  ASSERT_EQ(good.survivors, (std::vector<std::string>{"alice", "bob", "carol"}));
  ASSERT_EQ(good.dropped, std::vector<std::string>{"dave"});
  auto& alice = h.clients[0];

  auto r = good;
  r.survivors.pop_back();
  r.dropped.push_back("carol");
  EXPECT_ERROR_HAS(alice.unmask(r), "only 2 survivors, the threshold is 3");
  r = good;
  r.dropped.push_back("bob");
  EXPECT_ERROR_HAS(alice.unmask(r), "'bob' as both survivor and dropped");
  r = good;
  r.survivors = {"bob", "carol", "dave"};
  r.dropped = {"alice"};
  EXPECT_ERROR_HAS(alice.unmask(r), "not among the survivors");
  r = good;
  r.dropped.push_back("erin");
  EXPECT_ERROR_HAS(alice.unmask(r), "'erin', who did not share keys");
  r = good;
  r.dropped.push_back("mallory");
  EXPECT_ERROR_HAS(alice.unmask(r), "'mallory', who did not share keys");
  r = good;
  r.dropped.clear();
  EXPECT_ERROR_HAS(alice.unmask(r), "does not account for 'dave'");
  r = good;
  r.survivors.push_back("alice");
  EXPECT_ERROR_HAS(alice.unmask(r), "twice");
  r = good;
  r.round_id = "round-8";
  EXPECT_ERROR_HAS(alice.unmask(r), "round 'round-8'");

  // After every refusal the genuine request is answered, once, with b-shares of survivors and
  // s_sk-shares of the dropped only.
  const auto response = alice.unmask(good);
  ASSERT_EQ(response.self_mask_shares.size(), 3u);
  ASSERT_EQ(response.key_shares.size(), 1u);
  EXPECT_EQ(response.key_shares[0].owner, "dave");
  for (const auto& s : response.self_mask_shares) EXPECT_NE(s.owner, "dave");
  EXPECT_ERROR_HAS(alice.unmask(good), "out of order");
}

TEST(SecAggProtocol, ServerRefusesBadUnmaskResponses) {
  Harness h(5, 3, 8);
  h.advertise();
  h.share();
  h.mask({4});
  const auto request = h.server.unmask_request();
  const auto response = h.clients[0].unmask(request);
  auto r = response;
  r.participant = "erin";
  EXPECT_ERROR_HAS(h.server.receive_unmask(r), "not a survivor");
  r = response;
  r.self_mask_shares.push_back({"erin", r.key_shares[0].share});  // asks for both of erin's secrets
  EXPECT_ERROR_HAS(h.server.receive_unmask(r), "the request asked for 4");
  r = response;
  r.self_mask_shares[1].owner = "erin";
  EXPECT_ERROR_HAS(h.server.receive_unmask(r), "unrequested or repeated self-mask share of 'erin'");
  r = response;
  r.key_shares[0].share.x = 2;
  EXPECT_ERROR_HAS(h.server.receive_unmask(r), "the sender's Shamir x is 1");
  r = response;
  r.key_shares[0].share.y.pop_back();
  EXPECT_ERROR_HAS(h.server.receive_unmask(r), "chunks");
  r = response;
  r.round_id = "x";
  EXPECT_ERROR_HAS(h.server.receive_unmask(r), "round 'x'");
  h.server.receive_unmask(response);
  EXPECT_FALSE(h.server.can_finish());
}

TEST(SecAggProtocol, InconsistentSharesAreDetectedAtFinish) {
  // All four survivors answer: a tampered share is off the polynomial the other three define.
  for (bool tamper_key_share : {true, false}) {
    Harness h(5, 3, 8);
    h.advertise();
    h.share();
    h.mask({2});
    auto request = h.server.unmask_request();
    for (std::size_t u : {0u, 1u, 3u, 4u}) {
      auto response = h.clients[u].unmask(request);
      if (u == 3) {
        auto& share = tamper_key_share ? response.key_shares[0].share : response.self_mask_shares[0].share;
        share.y[2] = (share.y[2] + 12345) % kShamirPrime;
      }
      h.server.receive_unmask(response);
    }
    SCOPED_TRACE(tamper_key_share ? "tampered key share" : "tampered self-mask share");
    EXPECT_ERROR_HAS(h.server.finish(), "are inconsistent");
  }
  // Exactly threshold answers: nothing to cross-check, but a rebuilt s_sk must match its s_pk.
  Harness h(5, 3, 8);
  h.advertise();
  h.share();
  h.mask({2});
  auto request = h.server.unmask_request();
  for (std::size_t u : {0u, 1u, 3u}) {
    auto response = h.clients[u].unmask(request);
    if (u == 1) response.key_shares[0].share.y[0] = (response.key_shares[0].share.y[0] + 1) % kShamirPrime;
    h.server.receive_unmask(response);
  }
  EXPECT_ERROR_HAS(h.server.finish(), "mask key of 'carol'");
}

// ---- the wire format ----

// One valid encoding of every message type, from a real round with a dropout (so that every list
// is non-empty).
std::vector<std::pair<SecAggMessageType, std::vector<std::uint8_t>>> sample_messages() {
  Harness h(4, 2, 6);
  h.advertise();
  h.share();
  h.mask({3});
  h.unmask();
  return {
      {SecAggMessageType::Params, h.params.encode()},
      {SecAggMessageType::AdvertiseKeys, h.advertised[0].encode()},
      {SecAggMessageType::KeyDirectory, h.directory.encode()},
      {SecAggMessageType::ShareUpload, h.uploads[0].encode()},
      {SecAggMessageType::ShareDelivery, h.deliveries[0].encode()},
      {SecAggMessageType::MaskedInput, h.masked[0].encode()},
      {SecAggMessageType::UnmaskRequest, h.request.encode()},
      {SecAggMessageType::UnmaskResponse, h.responses[0].encode()},
  };
}

// Decodes as the given type and re-encodes; throws core::Error like decode.
std::vector<std::uint8_t> decode_and_reencode(SecAggMessageType type, std::span<const std::uint8_t> bytes) {
  switch (type) {
    case SecAggMessageType::Params: return SecAggParams::decode(bytes).encode();
    case SecAggMessageType::AdvertiseKeys: return AdvertiseKeys::decode(bytes).encode();
    case SecAggMessageType::KeyDirectory: return KeyDirectory::decode(bytes).encode();
    case SecAggMessageType::ShareUpload: return ShareUpload::decode(bytes).encode();
    case SecAggMessageType::ShareDelivery: return ShareDelivery::decode(bytes).encode();
    case SecAggMessageType::MaskedInput: return MaskedInput::decode(bytes).encode();
    case SecAggMessageType::UnmaskRequest: return UnmaskRequest::decode(bytes).encode();
    case SecAggMessageType::UnmaskResponse: return UnmaskResponse::decode(bytes).encode();
  }
  return {};
}

TEST(SecAggWire, EveryMessageRoundTripsExactly) {
  for (const auto& [type, bytes] : sample_messages()) {
    EXPECT_EQ(peek_message_type(bytes), type);
    EXPECT_EQ(decode_and_reencode(type, bytes), bytes) << static_cast<int>(type);
  }
  Harness h(3, 2, 4);
  h.advertise();
  EXPECT_EQ(KeyDirectory::decode(h.directory.encode()), h.directory);
  EXPECT_EQ(AdvertiseKeys::decode(h.advertised[1].encode()), h.advertised[1]);
}

TEST(SecAggWire, EveryTruncationOfEveryMessageThrows) {
  for (const auto& [type, bytes] : sample_messages()) {
    for (std::size_t n = 0; n < bytes.size(); ++n)
      EXPECT_FALSE(error_of([&] { decode_and_reencode(type, std::span(bytes).first(n)); }).empty())
          << "type " << static_cast<int>(type) << " truncated to " << n << " of " << bytes.size();
  }
}

TEST(SecAggWire, DamagedMessagesThrowOrDecodeNeverCrash) {
  for (const auto& [type, bytes] : sample_messages()) {
    auto trailing = bytes;
    trailing.push_back(0);
    EXPECT_ERROR_HAS(decode_and_reencode(type, trailing), "trailing");
    auto magic = bytes;
    magic[0] = 'X';
    EXPECT_ERROR_HAS(decode_and_reencode(type, magic), "magic");
    auto version = bytes;
    version[4] = 2;
    EXPECT_ERROR_HAS(decode_and_reencode(type, version), "wire version 2");
    auto kind = bytes;
    kind[5] = static_cast<std::uint8_t>(static_cast<int>(type) % 8 + 1);
    EXPECT_ERROR_HAS(decode_and_reencode(type, kind), "expected a");
    kind[5] = 9;
    EXPECT_ERROR_HAS(decode_and_reencode(type, kind), "unknown message type 9");
    // Every single-bit flip either decodes to something that re-encodes to the same bytes, or
    // is refused with core::Error.
    for (std::size_t i = 0; i < bytes.size(); ++i)
      for (int bit : {0, 7}) {
        auto flipped = bytes;
        flipped[i] ^= static_cast<std::uint8_t>(1 << bit);
        try {
          EXPECT_EQ(decode_and_reencode(type, flipped), flipped);
        } catch (const core::Error&) {
        }
      }
  }
}

TEST(SecAggWire, ForgedCountsAreRefusedBeforeAllocating) {
  auto masked = MaskedInput{"r", "alice", {1, 2, 3}}.encode();
  // header (6) + round id (2 + 1) + participant (2 + 5) = 16: the count follows.
  for (std::uint32_t forged : {0xffffffffu, 1u << 28, 4u}) {
    auto bytes = masked;
    for (int i = 0; i < 4; ++i) bytes[16 + i] = static_cast<std::uint8_t>(forged >> (8 * i));
    const std::string message = error_of([&] { MaskedInput::decode(bytes); });
    EXPECT_TRUE(message.find("exceeds the limit") != std::string::npos || message.find("needs more bytes") != std::string::npos)
        << message;
  }
  auto directory = KeyDirectory{"r", 2, {}}.encode();
  directory.resize(directory.size() - 4);
  for (int i = 0; i < 4; ++i) directory.push_back(0xff);
  EXPECT_ERROR_HAS(KeyDirectory::decode(directory), "exceeds the limit");
  auto id = AdvertiseKeys{"r", "alice", {}, {}}.encode();
  id[9] = 200;  // participant id length 200 > 128
  EXPECT_ERROR_HAS(AdvertiseKeys::decode(id), "exceeds 128");
  id = AdvertiseKeys{"r", "alice", {}, {}}.encode();
  id[11] = '\n';
  EXPECT_ERROR_HAS(AdvertiseKeys::decode(id), "control byte");
  auto response = UnmaskResponse{"r", "a", {{"b", {1, {kShamirPrime - 1}}}}, {}}.encode();
  EXPECT_EQ(UnmaskResponse::decode(response).self_mask_shares[0].share.y[0], kShamirPrime - 1);
  response[response.size() - 12] = 0xff;  // the last y's low byte: now >= p
  response[response.size() - 6] = 0xff;
  response[response.size() - 5] = 0xff;
  EXPECT_ERROR_HAS(UnmaskResponse::decode(response), "outside GF(2^61 - 1)");
}

TEST(SecAggWire, EncodeRefusesWhatDecodeWouldRefuse) {
  EXPECT_ERROR_HAS(AdvertiseKeys({"r", std::string(129, 'a'), {}, {}}).encode(), "at most 128");
  EXPECT_ERROR_HAS(AdvertiseKeys({"", "alice", {}, {}}).encode(), "round id is empty");
  EXPECT_ERROR_HAS(SecAggParams({"r", 2, kMaxVectorLength + 1}).encode(), "2^28");
  EXPECT_ERROR_HAS(UnmaskResponse({"r", "a", {{"b", {1, {kShamirPrime}}}}, {}}).encode(), "outside GF");
  EXPECT_ERROR_HAS(ShareDelivery({"r", {{"a", "b", std::vector<std::uint8_t>(kMaxCiphertextBytes + 1)}}}).encode(), "limit");
}

}  // namespace
}  // namespace aegis::federated
