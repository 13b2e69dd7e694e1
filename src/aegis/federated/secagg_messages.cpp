// The secure-aggregation wire format. Every byte comes from a peer that may be hostile or broken, so
// the reader checks each length against its limit and against the bytes left before it allocates,
// and refuses trailing bytes; the writer refuses what the reader would refuse.
#include <algorithm>
#include <string>

#include "aegis/core/error.h"
#include "aegis/federated/secure_aggregation.h"

namespace aegis::federated {

namespace {

constexpr std::uint8_t kMagic[4] = {'A', 'G', 'S', 'A'};
constexpr std::size_t kHeaderBytes = 6;  // magic, version, type

const char* type_name(SecAggMessageType type) {
  switch (type) {
    case SecAggMessageType::Params: return "SecAggParams";
    case SecAggMessageType::AdvertiseKeys: return "AdvertiseKeys";
    case SecAggMessageType::KeyDirectory: return "KeyDirectory";
    case SecAggMessageType::ShareUpload: return "ShareUpload";
    case SecAggMessageType::ShareDelivery: return "ShareDelivery";
    case SecAggMessageType::MaskedInput: return "MaskedInput";
    case SecAggMessageType::UnmaskRequest: return "UnmaskRequest";
    case SecAggMessageType::UnmaskResponse: return "UnmaskResponse";
  }
  return "unknown";
}

const std::string kMalformedHint =
    "the peer sent a malformed, truncated or foreign message; drop it (and the connection) and check that both "
    "sides run the same Aegis version";

class Writer {
 public:
  Writer(SecAggMessageType type, std::string_view round_id) : type_(type) {
    bytes_.assign(std::begin(kMagic), std::end(kMagic));
    bytes_.push_back(kSecAggWireVersion);
    bytes_.push_back(static_cast<std::uint8_t>(type));
    id(round_id, "round id");
  }
  void u16(std::uint16_t v) { little_endian(v, 2); }
  void u32(std::uint32_t v) { little_endian(v, 4); }
  void u64(std::uint64_t v) { little_endian(v, 8); }
  void key(const Key32& k) { bytes_.insert(bytes_.end(), k.begin(), k.end()); }
  void id(std::string_view text, std::string_view what) {
    check_identifier(text, what);
    u16(static_cast<std::uint16_t>(text.size()));
    bytes_.insert(bytes_.end(), text.begin(), text.end());
  }
  void count(std::size_t n, std::uint64_t limit, std::string_view what) {
    if (n > limit)
      throw core::Error(std::string("cannot encode ") + type_name(type_) + ": " + std::string(what) + " has " +
                        std::to_string(n) + " entries, the limit is " + std::to_string(limit));
    u32(static_cast<std::uint32_t>(n));
  }
  void blob(std::span<const std::uint8_t> data, std::size_t limit, std::string_view what) {
    count(data.size(), limit, what);
    bytes_.insert(bytes_.end(), data.begin(), data.end());
  }
  void share(const ShamirShare& s) {
    u32(s.x);
    count(s.y.size(), kMaxShamirChunks, "share chunks");
    for (auto y : s.y) {
      if (y >= kShamirPrime)
        throw core::Error(std::string("cannot encode ") + type_name(type_) + ": a share value lies outside GF(2^61 - 1)");
      u64(y);
    }
  }
  std::vector<std::uint8_t> take() { return std::move(bytes_); }

 private:
  void little_endian(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  SecAggMessageType type_;
  std::vector<std::uint8_t> bytes_;
};

class Reader {
 public:
  Reader(std::span<const std::uint8_t> bytes, SecAggMessageType expected) : bytes_(bytes), type_(expected) {
    const auto actual = peek_message_type(bytes);
    if (actual != expected)
      fail(std::string("expected a ") + type_name(expected) + " message, got a " + type_name(actual));
    pos_ = kHeaderBytes;
    round_id = id("round id");
  }
  std::string round_id;

  std::uint16_t u16(std::string_view what) { return static_cast<std::uint16_t>(little_endian(2, what)); }
  std::uint32_t u32(std::string_view what) { return static_cast<std::uint32_t>(little_endian(4, what)); }
  std::uint64_t u64(std::string_view what) { return little_endian(8, what); }
  Key32 key(std::string_view what) {
    need(32, what);
    Key32 k;
    std::copy_n(bytes_.data() + pos_, 32, k.begin());
    pos_ += 32;
    return k;
  }
  std::string id(std::string_view what) {
    const std::size_t at = pos_;
    const std::size_t n = u16(what);
    if (n > kMaxIdBytes) fail(std::string(what) + " of " + std::to_string(n) + " bytes exceeds " + std::to_string(kMaxIdBytes), at);
    need(n, what);
    std::string text(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    try {
      check_identifier(text, what);
    } catch (const core::Error& e) {
      fail(e.what(), at);
    }
    return text;
  }
  // A u32 count, checked against its limit and against the bytes left (each item takes at least
  // min_item_bytes), so that a forged count cannot make us allocate.
  std::size_t count(std::uint64_t limit, std::size_t min_item_bytes, std::string_view what) {
    const std::size_t at = pos_;
    const std::uint64_t n = u32(what);
    if (n > limit) fail(std::string(what) + ": count " + std::to_string(n) + " exceeds the limit " + std::to_string(limit), at);
    if (n * min_item_bytes > bytes_.size() - pos_)
      fail(std::string(what) + ": count " + std::to_string(n) + " needs more bytes than the " +
               std::to_string(bytes_.size() - pos_) + " left",
           at);
    return static_cast<std::size_t>(n);
  }
  std::vector<std::uint8_t> blob(std::size_t limit, std::string_view what) {
    const std::size_t n = count(limit, 1, what);
    std::vector<std::uint8_t> out(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                                  bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return out;
  }
  ShamirShare share() {
    ShamirShare s;
    s.x = u32("share x");
    const std::size_t n = count(kMaxShamirChunks, 8, "share chunks");
    s.y.resize(n);
    for (auto& y : s.y) {
      const std::size_t at = pos_;
      y = u64("share value");
      if (y >= kShamirPrime) fail("share value outside GF(2^61 - 1)", at);
    }
    return s;
  }
  void finish() {
    if (pos_ != bytes_.size()) fail(std::to_string(bytes_.size() - pos_) + " trailing bytes after the message");
  }
  [[noreturn]] void fail(const std::string& what) { fail(what, pos_); }
  [[noreturn]] void fail(const std::string& what, std::size_t at) {
    throw core::Error(std::string("malformed ") + type_name(type_) + " message: " + what + " (at byte " +
                          std::to_string(at) + " of " + std::to_string(bytes_.size()) + ")",
                      kMalformedHint);
  }

 private:
  void need(std::size_t n, std::string_view what) {
    if (n > bytes_.size() - pos_)
      fail("truncated: " + std::string(what) + " needs " + std::to_string(n) + " bytes, " +
           std::to_string(bytes_.size() - pos_) + " left");
  }
  std::uint64_t little_endian(std::size_t n, std::string_view what) {
    need(n, what);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= std::uint64_t(bytes_[pos_ + i]) << (8 * i);
    pos_ += n;
    return v;
  }

  std::span<const std::uint8_t> bytes_;
  SecAggMessageType type_;
  std::size_t pos_ = 0;
};

// The smallest encodings, for the bytes-left check on counts.
constexpr std::size_t kMinIdBytes = 2 + 1;
constexpr std::size_t kMinEncryptedShareBytes = 2 * kMinIdBytes + 4;
constexpr std::size_t kMinRevealedShareBytes = kMinIdBytes + 4 + 4;

void write_share_list(Writer& w, const std::vector<EncryptedShare>& shares) {
  w.count(shares.size(), kMaxParticipants, "shares");
  for (const auto& s : shares) {
    w.id(s.from, "share sender");
    w.id(s.to, "share recipient");
    w.blob(s.ciphertext, kMaxCiphertextBytes, "share ciphertext");
  }
}

std::vector<EncryptedShare> read_share_list(Reader& r) {
  std::vector<EncryptedShare> shares(r.count(kMaxParticipants, kMinEncryptedShareBytes, "shares"));
  for (auto& s : shares) {
    s.from = r.id("share sender");
    s.to = r.id("share recipient");
    s.ciphertext = r.blob(kMaxCiphertextBytes, "share ciphertext");
  }
  return shares;
}

void write_id_list(Writer& w, const std::vector<std::string>& ids, std::string_view what) {
  w.count(ids.size(), kMaxParticipants, what);
  for (const auto& id : ids) w.id(id, what);
}

std::vector<std::string> read_id_list(Reader& r, std::string_view what) {
  std::vector<std::string> ids(r.count(kMaxParticipants, kMinIdBytes, what));
  for (auto& id : ids) id = r.id(what);
  return ids;
}

void write_revealed(Writer& w, const std::vector<RevealedShare>& shares, std::string_view what) {
  w.count(shares.size(), kMaxParticipants, what);
  for (const auto& s : shares) {
    w.id(s.owner, "share owner");
    w.share(s.share);
  }
}

std::vector<RevealedShare> read_revealed(Reader& r, std::string_view what) {
  std::vector<RevealedShare> shares(r.count(kMaxParticipants, kMinRevealedShareBytes, what));
  for (auto& s : shares) {
    s.owner = r.id("share owner");
    s.share = r.share();
  }
  return shares;
}

}  // namespace

void check_identifier(std::string_view id, std::string_view what) {
  if (id.empty()) throw core::Error(std::string(what) + " is empty", "every participant and round needs a name");
  if (id.size() > kMaxIdBytes)
    throw core::Error(std::string(what) + " is " + std::to_string(id.size()) + " bytes long; at most " +
                      std::to_string(kMaxIdBytes) + " are allowed");
  for (unsigned char c : id)
    if (c < 0x20 || c == 0x7f)
      throw core::Error(std::string(what) + " contains a control byte (0x" + "0123456789abcdef"[c >> 4] +
                        "0123456789abcdef"[c & 15] + ")",
                        "use printable names for participants and rounds");
}

SecAggMessageType peek_message_type(std::span<const std::uint8_t> bytes) {
  auto fail = [&](const std::string& what) -> SecAggMessageType {
    throw core::Error("malformed secure-aggregation message: " + what, kMalformedHint);
  };
  if (bytes.size() < kHeaderBytes)
    return fail(std::to_string(bytes.size()) + " bytes, shorter than the 6-byte header");
  if (!std::equal(std::begin(kMagic), std::end(kMagic), bytes.begin())) return fail("no \"AGSA\" magic");
  if (bytes[4] != kSecAggWireVersion)
    return fail("wire version " + std::to_string(bytes[4]) + ", this build speaks version " +
                std::to_string(kSecAggWireVersion));
  if (bytes[5] < 1 || bytes[5] > 8) return fail("unknown message type " + std::to_string(bytes[5]));
  return static_cast<SecAggMessageType>(bytes[5]);
}

// ---- encode / decode ----

std::vector<std::uint8_t> SecAggParams::encode() const {
  Writer w(SecAggMessageType::Params, round_id);
  w.u32(threshold);
  if (vector_length > kMaxVectorLength)
    throw core::Error("cannot encode SecAggParams: vector length " + std::to_string(vector_length) +
                      " exceeds 2^28 words");
  w.u64(vector_length);
  return w.take();
}

SecAggParams SecAggParams::decode(std::span<const std::uint8_t> bytes) {
  Reader r(bytes, SecAggMessageType::Params);
  SecAggParams m;
  m.round_id = r.round_id;
  m.threshold = r.u32("threshold");
  if (m.threshold > kMaxParticipants) r.fail("threshold " + std::to_string(m.threshold) + " exceeds the participant limit");
  m.vector_length = r.u64("vector length");
  if (m.vector_length > kMaxVectorLength) r.fail("vector length " + std::to_string(m.vector_length) + " exceeds 2^28 words");
  r.finish();
  return m;
}

std::vector<std::uint8_t> AdvertiseKeys::encode() const {
  Writer w(SecAggMessageType::AdvertiseKeys, round_id);
  w.id(participant, "participant id");
  w.key(c_public);
  w.key(s_public);
  return w.take();
}

AdvertiseKeys AdvertiseKeys::decode(std::span<const std::uint8_t> bytes) {
  Reader r(bytes, SecAggMessageType::AdvertiseKeys);
  AdvertiseKeys m;
  m.round_id = r.round_id;
  m.participant = r.id("participant id");
  m.c_public = r.key("c public key");
  m.s_public = r.key("s public key");
  r.finish();
  return m;
}

std::vector<std::uint8_t> KeyDirectory::encode() const {
  Writer w(SecAggMessageType::KeyDirectory, round_id);
  w.u32(threshold);
  w.count(participants.size(), kMaxParticipants, "participants");
  for (const auto& p : participants) {
    w.id(p.participant, "participant id");
    w.key(p.c_public);
    w.key(p.s_public);
  }
  return w.take();
}

KeyDirectory KeyDirectory::decode(std::span<const std::uint8_t> bytes) {
  Reader r(bytes, SecAggMessageType::KeyDirectory);
  KeyDirectory m;
  m.round_id = r.round_id;
  m.threshold = r.u32("threshold");
  if (m.threshold > kMaxParticipants) r.fail("threshold " + std::to_string(m.threshold) + " exceeds the participant limit");
  m.participants.resize(r.count(kMaxParticipants, kMinIdBytes + 64, "participants"));
  for (auto& p : m.participants) {
    p.round_id = m.round_id;
    p.participant = r.id("participant id");
    p.c_public = r.key("c public key");
    p.s_public = r.key("s public key");
  }
  r.finish();
  return m;
}

std::vector<std::uint8_t> ShareUpload::encode() const {
  Writer w(SecAggMessageType::ShareUpload, round_id);
  w.id(participant, "participant id");
  write_share_list(w, shares);
  return w.take();
}

ShareUpload ShareUpload::decode(std::span<const std::uint8_t> bytes) {
  Reader r(bytes, SecAggMessageType::ShareUpload);
  ShareUpload m;
  m.round_id = r.round_id;
  m.participant = r.id("participant id");
  m.shares = read_share_list(r);
  r.finish();
  return m;
}

std::vector<std::uint8_t> ShareDelivery::encode() const {
  Writer w(SecAggMessageType::ShareDelivery, round_id);
  write_share_list(w, shares);
  return w.take();
}

ShareDelivery ShareDelivery::decode(std::span<const std::uint8_t> bytes) {
  Reader r(bytes, SecAggMessageType::ShareDelivery);
  ShareDelivery m;
  m.round_id = r.round_id;
  m.shares = read_share_list(r);
  r.finish();
  return m;
}

std::vector<std::uint8_t> MaskedInput::encode() const {
  Writer w(SecAggMessageType::MaskedInput, round_id);
  w.id(participant, "participant id");
  w.count(masked.size(), kMaxVectorLength, "masked vector");
  for (auto word : masked) w.u32(word);
  return w.take();
}

MaskedInput MaskedInput::decode(std::span<const std::uint8_t> bytes) {
  Reader r(bytes, SecAggMessageType::MaskedInput);
  MaskedInput m;
  m.round_id = r.round_id;
  m.participant = r.id("participant id");
  m.masked.resize(r.count(kMaxVectorLength, 4, "masked vector"));
  for (auto& word : m.masked) word = r.u32("masked word");
  r.finish();
  return m;
}

std::vector<std::uint8_t> UnmaskRequest::encode() const {
  Writer w(SecAggMessageType::UnmaskRequest, round_id);
  write_id_list(w, survivors, "survivor id");
  write_id_list(w, dropped, "dropped id");
  return w.take();
}

UnmaskRequest UnmaskRequest::decode(std::span<const std::uint8_t> bytes) {
  Reader r(bytes, SecAggMessageType::UnmaskRequest);
  UnmaskRequest m;
  m.round_id = r.round_id;
  m.survivors = read_id_list(r, "survivor id");
  m.dropped = read_id_list(r, "dropped id");
  r.finish();
  return m;
}

std::vector<std::uint8_t> UnmaskResponse::encode() const {
  Writer w(SecAggMessageType::UnmaskResponse, round_id);
  w.id(participant, "participant id");
  write_revealed(w, self_mask_shares, "self-mask shares");
  write_revealed(w, key_shares, "key shares");
  return w.take();
}

UnmaskResponse UnmaskResponse::decode(std::span<const std::uint8_t> bytes) {
  Reader r(bytes, SecAggMessageType::UnmaskResponse);
  UnmaskResponse m;
  m.round_id = r.round_id;
  m.participant = r.id("participant id");
  m.self_mask_shares = read_revealed(r, "self-mask shares");
  m.key_shares = read_revealed(r, "key shares");
  r.finish();
  return m;
}

}  // namespace aegis::federated
