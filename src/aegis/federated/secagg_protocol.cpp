// The secure-aggregation protocol's two sides (Bonawitz et al. 2017, semi-honest variant). Each side
// is a state machine that checks every message against what the round allows at that point; a
// refusal throws core::Error and leaves the state as it was.
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <string>

#include "aegis/core/error.h"
#include "aegis/federated/secure_aggregation.h"

namespace aegis::federated {

namespace {

// Domain separation: the share-encryption key and the pairwise mask seed come from different
// X25519 key pairs, and the labels keep them apart even if a caller ever reused one.
constexpr std::string_view kShareKeyLabel = "aegis secagg v1 share encryption key";
constexpr std::string_view kMaskSeedLabel = "aegis secagg v1 pairwise mask seed";

std::span<const std::uint8_t> as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

Key32 derive_key(const Key32& private_key, const Key32& peer_public, const std::string& round_id,
                 std::string_view label) {
  Key32 agreed = x25519_agree(private_key, peer_public);
  // The round id as salt: keys and seeds from one round are useless in another.
  auto derived = hkdf_sha256(agreed, as_bytes(round_id), label, 32);
  OPENSSL_cleanse(agreed.data(), agreed.size());
  Key32 out;
  std::copy(derived.begin(), derived.end(), out.begin());
  OPENSSL_cleanse(derived.data(), derived.size());
  return out;
}

// The associated data of a sealed share: round, sender and recipient, length-prefixed so that no
// two triples give the same bytes. A share replayed into another round or re-addressed fails to open.
std::vector<std::uint8_t> share_associated_data(const std::string& round_id, const std::string& from,
                                                const std::string& to) {
  std::vector<std::uint8_t> ad{'A', 'G', 'S', 'A', '-', 's', 'h', 'a', 'r', 'e'};
  for (const std::string* part : {&round_id, &from, &to}) {
    ad.push_back(static_cast<std::uint8_t>(part->size()));
    ad.push_back(static_cast<std::uint8_t>(part->size() >> 8));
    ad.insert(ad.end(), part->begin(), part->end());
  }
  return ad;
}

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
void put_u64(std::vector<std::uint8_t>& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
std::uint64_t get_le(const std::uint8_t* p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= std::uint64_t(p[i]) << (8 * i);
  return v;
}

// x, then the s_sk share's chunks, then the b share's chunks.
std::vector<std::uint8_t> share_plaintext(const ShamirShare& key_share, const ShamirShare& mask_share) {
  std::vector<std::uint8_t> out;
  out.reserve(kSharePlaintextBytes);
  put_u32(out, key_share.x);
  for (auto y : key_share.y) put_u64(out, y);
  for (auto y : mask_share.y) put_u64(out, y);
  return out;
}

void cleanse(std::vector<std::uint64_t>& v) { OPENSSL_cleanse(v.data(), v.size() * sizeof(std::uint64_t)); }

void check_revealed_share(const ShamirShare& share, std::uint32_t expected_x, const std::string& sender,
                          const std::string& owner) {
  if (share.x != expected_x)
    throw core::Error("unmask response from '" + sender + "': its share of '" + owner + "' has x = " +
                          std::to_string(share.x) + ", the sender's Shamir x is " + std::to_string(expected_x),
                      "a participant may only reveal the shares it was given");
  if (share.y.size() != kSecretChunks)
    throw core::Error("unmask response from '" + sender + "': its share of '" + owner + "' has " +
                      std::to_string(share.y.size()) + " chunks, a 32-byte secret has " + std::to_string(kSecretChunks));
  for (auto y : share.y)
    if (y >= kShamirPrime)
      throw core::Error("unmask response from '" + sender + "': its share of '" + owner +
                        "' has a value outside GF(2^61 - 1)");
}

}  // namespace

// ---- participant ----

SecAggClient::SecAggClient(std::string participant, SecAggParams params)
    : participant_(std::move(participant)), params_(std::move(params)) {
  check_identifier(participant_, "participant id");
  check_identifier(params_.round_id, "round id");
  if (params_.threshold < 2)
    throw core::Error("secure aggregation needs a threshold of at least 2, got " + std::to_string(params_.threshold),
                      "with threshold 1 every share is the secret itself");
  if (params_.vector_length == 0 || params_.vector_length > kMaxVectorLength)
    throw core::Error("secure aggregation: vector length " + std::to_string(params_.vector_length) +
                      " outside 1..2^28 words");
}

SecAggClient::~SecAggClient() {
  OPENSSL_cleanse(c_keys_.private_key.data(), c_keys_.private_key.size());
  OPENSSL_cleanse(s_keys_.private_key.data(), s_keys_.private_key.size());
  OPENSSL_cleanse(self_mask_seed_.data(), self_mask_seed_.size());
  for (auto& [owner, held] : held_) {
    cleanse(held.key_share.y);
    cleanse(held.mask_share.y);
  }
}

void SecAggClient::require_stage(Stage expected, std::string_view call) const {
  if (stage_ == expected) return;
  static constexpr const char* kStageNames[] = {"created", "advertised keys", "shared keys", "sent its masked input",
                                                "answered the unmask request"};
  throw core::Error("participant '" + participant_ + "': " + std::string(call) + " called out of order (the participant has " +
                        kStageNames[static_cast<int>(stage_)] + ")",
                    "each stage runs once per round, in order: advertise, share_keys, masked_input, unmask");
}

const AdvertiseKeys& SecAggClient::directory_entry(const std::string& participant) const {
  auto it = directory_index_.find(participant);
  if (it == directory_index_.end())
    throw core::Error("participant '" + participant_ + "': '" + participant + "' is not in the round's key directory");
  return directory_[it->second];
}

AdvertiseKeys SecAggClient::advertise() {
  require_stage(Stage::Created, "advertise");
  c_keys_ = x25519_generate();
  s_keys_ = x25519_generate();
  stage_ = Stage::Advertised;
  return AdvertiseKeys{params_.round_id, participant_, c_keys_.public_key, s_keys_.public_key};
}

ShareUpload SecAggClient::share_keys(const KeyDirectory& directory) {
  require_stage(Stage::Advertised, "share_keys");
  const std::string who = "participant '" + participant_ + "': key directory ";
  if (directory.round_id != params_.round_id)
    throw core::Error(who + "is for round '" + directory.round_id + "', this is round '" + params_.round_id + "'",
                      "the server mixed up rounds; do not continue");
  if (directory.threshold != params_.threshold)
    throw core::Error(who + "says threshold " + std::to_string(directory.threshold) + ", the round was set up with " +
                      std::to_string(params_.threshold));
  const auto& members = directory.participants;
  if (members.size() < params_.threshold || members.size() > kMaxParticipants)
    throw core::Error(who + "lists " + std::to_string(members.size()) + " participants; the threshold is " +
                          std::to_string(params_.threshold) + " (and the limit " + std::to_string(kMaxParticipants) + ")",
                      "with fewer participants than the threshold nobody's input is protected; abort the round");
  std::set<Key32> keys;
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < members.size(); ++i) {
    check_identifier(members[i].participant, "participant id in the key directory");
    // The order fixes every Shamir x, so all participants must read it the same way.
    if (i > 0 && !(members[i - 1].participant < members[i].participant))
      throw core::Error(who + "is not sorted by participant id or lists '" + members[i].participant + "' twice");
    if (!keys.insert(members[i].c_public).second || !keys.insert(members[i].s_public).second)
      throw core::Error(who + "gives '" + members[i].participant + "' a public key that appears twice in the directory",
                        "a reused key would let one participant's masks cancel another's; abort the round");
    index[members[i].participant] = i;
  }
  auto self = index.find(participant_);
  if (self == index.end()) throw core::Error(who + "does not list this participant");
  if (members[self->second].c_public != c_keys_.public_key || members[self->second].s_public != s_keys_.public_key)
    throw core::Error(who + "lists this participant with keys it did not advertise",
                      "the server substituted keys; abort the round");

  Key32 seed{};
  if (RAND_bytes(seed.data(), static_cast<int>(seed.size())) != 1)
    throw core::Error("participant '" + participant_ + "': the CSPRNG failed to produce the self-mask seed");
  const auto n = static_cast<std::uint32_t>(members.size());
  auto key_shares = shamir_split(s_keys_.private_key, params_.threshold, n);
  auto mask_shares = shamir_split(seed, params_.threshold, n);

  ShareUpload upload{params_.round_id, participant_, {}};
  upload.shares.reserve(n - 1);
  try {
    for (std::uint32_t i = 0; i < n; ++i) {
      if (i == self->second) continue;
      const auto& peer = members[i];
      Key32 key = derive_key(c_keys_.private_key, peer.c_public, params_.round_id, kShareKeyLabel);
      auto plaintext = share_plaintext(key_shares[i], mask_shares[i]);
      upload.shares.push_back(
          {participant_, peer.participant, seal(key, plaintext, share_associated_data(params_.round_id, participant_, peer.participant))});
      OPENSSL_cleanse(plaintext.data(), plaintext.size());
      OPENSSL_cleanse(key.data(), key.size());
    }
  } catch (const core::Error& e) {
    OPENSSL_cleanse(seed.data(), seed.size());
    for (auto& s : key_shares) cleanse(s.y);
    for (auto& s : mask_shares) cleanse(s.y);
    throw core::Error("participant '" + participant_ + "': cannot seal shares: " + e.what(), e.hint());
  }

  directory_ = members;
  directory_index_ = std::move(index);
  own_x_ = static_cast<std::uint32_t>(self->second) + 1;
  self_mask_seed_ = seed;
  OPENSSL_cleanse(seed.data(), seed.size());
  held_.clear();
  held_[participant_] = HeldShares{key_shares[self->second], mask_shares[self->second]};
  for (auto& s : key_shares) cleanse(s.y);
  for (auto& s : mask_shares) cleanse(s.y);
  stage_ = Stage::SharedKeys;
  return upload;
}

MaskedInput SecAggClient::masked_input(const ShareDelivery& delivery, std::span<const std::uint32_t> input) {
  require_stage(Stage::SharedKeys, "masked_input");
  const std::string who = "participant '" + participant_ + "': ";
  if (delivery.round_id != params_.round_id)
    throw core::Error(who + "share delivery is for round '" + delivery.round_id + "', this is round '" +
                      params_.round_id + "'");
  if (input.size() != params_.vector_length)
    throw core::Error(who + "input has " + std::to_string(input.size()) + " words, the round aggregates vectors of " +
                          std::to_string(params_.vector_length),
                      "encode the update to the round's vector length");

  std::map<std::string, HeldShares> received;
  auto wipe_received = [&] {
    for (auto& [owner, held] : received) {
      cleanse(held.key_share.y);
      cleanse(held.mask_share.y);
    }
  };
  try {
    for (const auto& share : delivery.shares) {
      if (share.to != participant_)
        throw core::Error(who + "share delivery holds a share addressed to '" + share.to + "'");
      if (share.from == participant_) throw core::Error(who + "share delivery holds a share from itself");
      const AdvertiseKeys& sender = directory_entry(share.from);
      if (received.count(share.from)) throw core::Error(who + "share delivery holds two shares from '" + share.from + "'");
      Key32 key = derive_key(c_keys_.private_key, sender.c_public, params_.round_id, kShareKeyLabel);
      std::vector<std::uint8_t> plaintext;
      try {
        plaintext = open(key, share.ciphertext, share_associated_data(params_.round_id, share.from, participant_));
      } catch (const core::Error&) {
        OPENSSL_cleanse(key.data(), key.size());
        throw core::Error(who + "the share from '" + share.from +
                              "' failed authentication (forged, corrupted, or sealed for another recipient or round)",
                          "the relay or the sender tampered with it; abort the round");
      }
      OPENSSL_cleanse(key.data(), key.size());
      if (plaintext.size() != kSharePlaintextBytes || get_le(plaintext.data(), 4) != own_x_) {
        OPENSSL_cleanse(plaintext.data(), plaintext.size());
        throw core::Error(who + "the share from '" + share.from + "' is not a share for this participant's Shamir x");
      }
      HeldShares held;
      held.key_share.x = held.mask_share.x = own_x_;
      for (std::size_t c = 0; c < kSecretChunks; ++c) {
        held.key_share.y.push_back(get_le(plaintext.data() + 4 + 8 * c, 8));
        held.mask_share.y.push_back(get_le(plaintext.data() + 4 + 8 * (kSecretChunks + c), 8));
      }
      OPENSSL_cleanse(plaintext.data(), plaintext.size());
      const bool in_field = std::all_of(held.key_share.y.begin(), held.key_share.y.end(), [](auto y) { return y < kShamirPrime; }) &&
                            std::all_of(held.mask_share.y.begin(), held.mask_share.y.end(), [](auto y) { return y < kShamirPrime; });
      if (!in_field) throw core::Error(who + "the share from '" + share.from + "' holds values outside GF(2^61 - 1)");
      received.emplace(share.from, std::move(held));
    }
    // U2 = those who shared with us, and ourselves.
    if (received.size() + 1 < params_.threshold)
      throw core::Error(who + "only " + std::to_string(received.size() + 1) +
                            " participants (itself included) shared keys; the threshold is " +
                            std::to_string(params_.threshold),
                        "too many participants dropped out; the round cannot protect the inputs and must be restarted");

    MaskedInput out{params_.round_id, participant_, std::vector<std::uint32_t>(input.begin(), input.end())};
    prg_add(self_mask_seed_, out.masked, false);
    for (const auto& [peer, held] : received) {
      Key32 seed = derive_key(s_keys_.private_key, directory_entry(peer).s_public, params_.round_id, kMaskSeedLabel);
      // Antisymmetric signs: u adds what v subtracts, so the pair cancels in the sum.
      prg_add(seed, out.masked, participant_ > peer);
      OPENSSL_cleanse(seed.data(), seed.size());
    }
    for (auto& [owner, held] : received) held_.emplace(owner, std::move(held));
    stage_ = Stage::SentMaskedInput;
    return out;
  } catch (...) {
    wipe_received();
    throw;
  }
}

UnmaskResponse SecAggClient::unmask(const UnmaskRequest& request) {
  require_stage(Stage::SentMaskedInput, "unmask");
  const std::string who = "participant '" + participant_ + "' refuses the unmask request: ";
  if (request.round_id != params_.round_id)
    throw core::Error(who + "it is for round '" + request.round_id + "', this is round '" + params_.round_id + "'");
  if (request.survivors.size() < params_.threshold)
    throw core::Error(who + "only " + std::to_string(request.survivors.size()) + " survivors, the threshold is " +
                          std::to_string(params_.threshold),
                      "revealing shares for fewer than threshold survivors could expose an individual input");
  std::set<std::string> survivors, dropped;
  for (const auto& id : request.survivors) {
    if (!survivors.insert(id).second) throw core::Error(who + "it lists survivor '" + id + "' twice");
    if (!held_.count(id)) throw core::Error(who + "it names '" + id + "', who did not share keys with this participant");
  }
  for (const auto& id : request.dropped) {
    if (survivors.count(id))
      throw core::Error(who + "it lists '" + id + "' as both survivor and dropped",
                        "revealing both shares would let the server unmask that participant's input");
    if (!dropped.insert(id).second) throw core::Error(who + "it lists dropped participant '" + id + "' twice");
    if (!held_.count(id)) throw core::Error(who + "it names '" + id + "', who did not share keys with this participant");
  }
  if (!survivors.count(participant_)) throw core::Error(who + "this participant is not among the survivors");
  // Every mask this participant added must be removable: everyone in its U2 is either a survivor
  // (self mask and pairwise mask cancel) or dropped (the server rebuilds the pairwise mask).
  for (const auto& [owner, held] : held_)
    if (!survivors.count(owner) && !dropped.count(owner))
      throw core::Error(who + "it does not account for '" + owner + "', who shared keys with this participant");

  UnmaskResponse response{params_.round_id, participant_, {}, {}};
  for (const auto& id : request.survivors) response.self_mask_shares.push_back({id, held_.at(id).mask_share});
  for (const auto& id : request.dropped) response.key_shares.push_back({id, held_.at(id).key_share});
  stage_ = Stage::Unmasked;
  return response;
}

// ---- aggregator ----

SecAggServer::SecAggServer(SecAggParams params) : params_(std::move(params)) {
  check_identifier(params_.round_id, "round id");
  if (params_.threshold < 2)
    throw core::Error("secure aggregation needs a threshold of at least 2, got " + std::to_string(params_.threshold),
                      "with threshold 1 every share is the secret itself");
  if (params_.vector_length == 0 || params_.vector_length > kMaxVectorLength)
    throw core::Error("secure aggregation: vector length " + std::to_string(params_.vector_length) +
                      " outside 1..2^28 words");
}

void SecAggServer::require_round(const std::string& round_id, std::string_view what) const {
  if (round_id != params_.round_id)
    throw core::Error(std::string(what) + " is for round '" + round_id + "', this server runs round '" +
                          params_.round_id + "'",
                      "a stale or misrouted message; drop it");
}

void SecAggServer::receive_keys(const AdvertiseKeys& message) {
  const std::string what = "AdvertiseKeys from '" + message.participant + "'";
  if (stage_ != Stage::CollectingKeys)
    throw core::Error(what + " arrived late: the key directory is already published",
                      "the participant joins the next round");
  require_round(message.round_id, what);
  check_identifier(message.participant, "participant id");
  if (keys_.count(message.participant))
    throw core::Error(what + " is a duplicate (replayed message?): this participant already advertised keys");
  if (message.c_public == message.s_public || seen_keys_.count(message.c_public) || seen_keys_.count(message.s_public))
    throw core::Error(what + " reuses a public key already in this round",
                      "every participant needs two fresh key pairs per round");
  if (keys_.size() >= kMaxParticipants)
    throw core::Error(what + ": the round already has the maximum of " + std::to_string(kMaxParticipants) + " participants");
  keys_.emplace(message.participant, message);
  seen_keys_.insert(message.c_public);
  seen_keys_.insert(message.s_public);
}

KeyDirectory SecAggServer::directory() {
  if (stage_ == Stage::CollectingKeys) {
    if (keys_.size() < params_.threshold)
      throw core::Error("only " + std::to_string(keys_.size()) + " participants advertised keys; round '" +
                            params_.round_id + "' needs at least the threshold of " + std::to_string(params_.threshold),
                        "wait for more participants or lower the threshold");
    directory_ = KeyDirectory{params_.round_id, params_.threshold, {}};
    std::uint32_t x = 1;
    for (const auto& [id, keys] : keys_) {  // std::map: sorted by participant id
      directory_.participants.push_back(keys);
      shamir_x_[id] = x++;
    }
    stage_ = Stage::CollectingShares;
  }
  return directory_;
}

void SecAggServer::receive_shares(const ShareUpload& message) {
  const std::string what = "ShareUpload from '" + message.participant + "'";
  if (stage_ == Stage::CollectingKeys)
    throw core::Error(what + " arrived early: the key directory is not published yet");
  if (stage_ != Stage::CollectingShares)
    throw core::Error(what + " arrived late: shares have already been delivered", "the participant counts as dropped");
  require_round(message.round_id, what);
  if (!shamir_x_.count(message.participant)) throw core::Error(what + ": the sender is not in the key directory");
  if (uploads_.count(message.participant))
    throw core::Error(what + " is a duplicate (replayed message?): this participant already uploaded shares");
  if (message.shares.size() != shamir_x_.size() - 1)
    throw core::Error(what + " holds " + std::to_string(message.shares.size()) + " shares; expected exactly one for each of the " +
                      std::to_string(shamir_x_.size() - 1) + " other participants");
  std::set<std::string> recipients;
  for (const auto& share : message.shares) {
    if (share.from != message.participant)
      throw core::Error(what + " holds a share that claims to come from '" + share.from + "'");
    if (share.to == message.participant) throw core::Error(what + " holds a share addressed to its sender");
    if (!shamir_x_.count(share.to)) throw core::Error(what + " holds a share for '" + share.to + "', who is not in the directory");
    if (!recipients.insert(share.to).second) throw core::Error(what + " holds two shares for '" + share.to + "'");
    if (share.ciphertext.size() != kSealedShareBytes)
      throw core::Error(what + ": the share for '" + share.to + "' is " + std::to_string(share.ciphertext.size()) +
                        " bytes, a sealed share is " + std::to_string(kSealedShareBytes));
  }
  uploads_.emplace(message.participant, message.shares);
}

ShareDelivery SecAggServer::delivery_for(const std::string& participant) {
  if (stage_ == Stage::CollectingKeys || stage_ == Stage::CollectingShares) {
    if (stage_ == Stage::CollectingKeys) throw core::Error("delivery_for called before the key directory was published");
    if (uploads_.size() < params_.threshold)
      throw core::Error("only " + std::to_string(uploads_.size()) + " participants uploaded shares; round '" +
                            params_.round_id + "' needs at least the threshold of " + std::to_string(params_.threshold),
                        "wait for more uploads, or abandon the round if participants dropped out");
    stage_ = Stage::CollectingMasked;
  }
  if (!uploads_.count(participant))
    throw core::Error("no share delivery for '" + participant +
                      "': it did not upload shares, so it is not part of the round any more");
  ShareDelivery delivery{params_.round_id, {}};
  for (const auto& [sender, shares] : uploads_) {
    if (sender == participant) continue;
    for (const auto& share : shares)
      if (share.to == participant) delivery.shares.push_back(share);
  }
  return delivery;
}

void SecAggServer::receive_masked(const MaskedInput& message) {
  const std::string what = "MaskedInput from '" + message.participant + "'";
  if (stage_ == Stage::CollectingKeys || stage_ == Stage::CollectingShares)
    throw core::Error(what + " arrived early: shares have not been delivered yet");
  if (stage_ != Stage::CollectingMasked)
    throw core::Error(what + " arrived late: the unmask request is already out", "the participant counts as dropped");
  require_round(message.round_id, what);
  if (!uploads_.count(message.participant))
    throw core::Error(what + ": the sender did not upload shares in this round (not in U2)");
  if (masked_.count(message.participant))
    throw core::Error(what + " is a duplicate (replayed message?): this participant already sent its masked input");
  if (message.masked.size() != params_.vector_length)
    throw core::Error(what + " has " + std::to_string(message.masked.size()) + " words; the round aggregates vectors of " +
                      std::to_string(params_.vector_length));
  masked_.emplace(message.participant, message.masked);
}

UnmaskRequest SecAggServer::unmask_request() {
  if (stage_ == Stage::CollectingKeys || stage_ == Stage::CollectingShares)
    throw core::Error("unmask_request called before the masked inputs were collected");
  if (stage_ == Stage::CollectingMasked) {
    if (masked_.size() < params_.threshold)
      throw core::Error("only " + std::to_string(masked_.size()) + " of the " + std::to_string(uploads_.size()) +
                            " participants that shared keys sent masked inputs; round '" + params_.round_id +
                            "' needs at least the threshold of " + std::to_string(params_.threshold),
                        "too many participants dropped out: the sum cannot be recovered; start a new round");
    request_ = UnmaskRequest{params_.round_id, {}, {}};
    for (const auto& [id, shares] : uploads_)
      (masked_.count(id) ? request_.survivors : request_.dropped).push_back(id);
    stage_ = Stage::Unmasking;
  }
  return request_;
}

void SecAggServer::receive_unmask(const UnmaskResponse& message) {
  const std::string what = "UnmaskResponse from '" + message.participant + "'";
  if (stage_ == Stage::Finished) throw core::Error(what + " arrived late: the sum is already computed");
  if (stage_ != Stage::Unmasking) throw core::Error(what + " arrived early: no unmask request has been issued");
  require_round(message.round_id, what);
  if (!masked_.count(message.participant))
    throw core::Error(what + ": the sender is not a survivor of this round");
  if (responses_.count(message.participant))
    throw core::Error(what + " is a duplicate (replayed message?): this participant already answered");
  const std::uint32_t x = shamir_x_.at(message.participant);
  auto check_list = [&](const std::vector<RevealedShare>& shares, const std::vector<std::string>& owners,
                        const char* kind) {
    if (shares.size() != owners.size())
      throw core::Error(what + " holds " + std::to_string(shares.size()) + " " + kind + " shares; the request asked for " +
                        std::to_string(owners.size()));
    std::set<std::string> expected(owners.begin(), owners.end());
    for (const auto& s : shares) {
      if (!expected.erase(s.owner))
        throw core::Error(what + " holds an unrequested or repeated " + kind + " share of '" + s.owner + "'",
                          "a survivor reveals self-mask shares of survivors only and key shares of dropped participants only");
      check_revealed_share(s.share, x, message.participant, s.owner);
    }
  };
  check_list(message.self_mask_shares, request_.survivors, "self-mask");
  check_list(message.key_shares, request_.dropped, "key");
  responses_.emplace(message.participant, message);
}

bool SecAggServer::can_finish() const {
  return stage_ == Stage::Unmasking && responses_.size() >= params_.threshold;
}

std::vector<std::uint32_t> SecAggServer::finish() {
  if (stage_ == Stage::Finished) throw core::Error("finish called twice for round '" + params_.round_id + "'");
  if (stage_ != Stage::Unmasking) throw core::Error("finish called before the unmask request was issued");
  if (responses_.size() < params_.threshold)
    throw core::Error("only " + std::to_string(responses_.size()) + " unmask responses; round '" + params_.round_id +
                          "' needs the threshold of " + std::to_string(params_.threshold),
                      "wait for more survivors to answer; if they are gone, the sum cannot be recovered");

  // Gathers every responder's share of one owner's secret, checks that they lie on one polynomial
  // and rebuilds the secret from the first threshold of them.
  auto rebuild = [&](const std::string& owner, bool self_mask) {
    std::vector<ShamirShare> shares;
    for (const auto& [sender, response] : responses_) {
      const auto& list = self_mask ? response.self_mask_shares : response.key_shares;
      for (const auto& s : list)
        if (s.owner == owner) shares.push_back(s.share);
    }
    const char* kind = self_mask ? "self-mask seed" : "mask key";
    auto fail = [&](const std::string& why) {
      for (auto& s : shares) cleanse(s.y);
      throw core::Error("cannot unmask round '" + params_.round_id + "': the shares of " + kind + " of '" + owner + "' " + why,
                        "a survivor sent wrong shares; the sum cannot be trusted, start a new round");
    };
    if (!shamir_consistent(shares, params_.threshold)) fail("are inconsistent (they do not lie on one polynomial)");
    std::vector<std::uint8_t> secret;
    try {
      secret = shamir_combine(std::span(shares).first(params_.threshold), params_.threshold, 32);
    } catch (const core::Error&) {
      fail("do not reconstruct a valid secret");
    }
    Key32 out;
    std::copy(secret.begin(), secret.end(), out.begin());
    OPENSSL_cleanse(secret.data(), secret.size());
    for (auto& s : shares) cleanse(s.y);
    if (!self_mask && x25519_public_key(out) != keys_.at(owner).s_public) {
      OPENSSL_cleanse(out.data(), out.size());
      fail("rebuild a private key that does not match the public key it advertised");
    }
    return out;
  };

  std::vector<std::uint32_t> sum(params_.vector_length, 0);
  for (const auto& [id, masked] : masked_)
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += masked[i];
  for (const auto& survivor : request_.survivors) {
    Key32 seed = rebuild(survivor, true);
    prg_add(seed, sum, true);
    OPENSSL_cleanse(seed.data(), seed.size());
  }
  for (const auto& gone : request_.dropped) {
    Key32 secret_key = rebuild(gone, false);
    for (const auto& survivor : request_.survivors) {
      // The survivor added +PRG(s) when its id sorts before the dropped one's, -PRG(s) otherwise.
      Key32 seed = derive_key(secret_key, keys_.at(survivor).s_public, params_.round_id, kMaskSeedLabel);
      prg_add(seed, sum, survivor < gone);
      OPENSSL_cleanse(seed.data(), seed.size());
    }
    OPENSSL_cleanse(secret_key.data(), secret_key.size());
  }
  stage_ = Stage::Finished;
  return sum;
}

std::vector<std::string> SecAggServer::survivors() const {
  std::vector<std::string> out;
  for (const auto& [id, masked] : masked_) out.push_back(id);
  return out;
}

}  // namespace aegis::federated
