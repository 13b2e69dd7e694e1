// Secure aggregation after Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
// Machine Learning" (CCS 2017), in its semi-honest variant: the channels are authenticated (mTLS), so
// the consistency round and the signatures are left out. The aggregator learns the sum of the
// participants' vectors mod 2^32 and nothing else, even when participants drop out mid-round.
// Transport-independent: every message has a strict binary encoding; the caller moves the bytes.
//
// The four stages, for a participant u and the server:
//   0 advertise: u sends two X25519 public keys, c_pk (share encryption) and s_pk (pairwise masks).
//   1 share keys: u Shamir-shares s_sk and a fresh self-mask seed b_u (t of n) and seals one pair of
//     shares to each other participant; the server forwards them.
//   2 masked input: u sends y_u = x_u + PRG(b_u) + sum over v of +-PRG(s_uv); pairwise masks cancel
//     in the sum.
//   3 unmask: survivors reveal shares of b for survivors and of s_sk for those who dropped after
//     stage 1, never both for one participant; the server rebuilds the masks and removes them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::federated {

using Key32 = std::array<std::uint8_t, 32>;

// ---- primitives (OpenSSL 3 EVP) --------------------------------------------------------------

struct X25519KeyPair {
  Key32 private_key{};
  Key32 public_key{};
};

X25519KeyPair x25519_generate();  // OpenSSL's CSPRNG
Key32 x25519_public_key(const Key32& private_key);
// Throws core::Error when the shared secret is all zero (the peer sent a low-order point).
Key32 x25519_agree(const Key32& private_key, const Key32& peer_public);

// RFC 5869 with SHA-256. An empty salt means HashLen zero bytes, as the RFC says. length <= 8160.
std::vector<std::uint8_t> hkdf_sha256(std::span<const std::uint8_t> ikm, std::span<const std::uint8_t> salt,
                                      std::string_view info, std::size_t length);

// RFC 8439 ChaCha20 (OpenSSL EVP_chacha20): XORs the keystream that starts at block `counter` into
// `data` in place.
void chacha20_xor(const Key32& key, std::uint32_t counter, const std::array<std::uint8_t, 12>& nonce,
                  std::span<std::uint8_t> data);

// The PRG that expands a 32-byte seed into mask words: the ChaCha20 keystream for that key with a
// zero nonce and counter 0, read as little-endian uint32. words[i] += (or -=) PRG(seed)[i] mod 2^32.
void prg_add(const Key32& seed, std::span<std::uint32_t> words, bool subtract);

// AES-256-GCM with a random 96-bit nonce: sealed = nonce (12) || ciphertext || tag (16).
inline constexpr std::size_t kSealOverheadBytes = 12 + 16;
std::vector<std::uint8_t> seal(const Key32& key, std::span<const std::uint8_t> plaintext,
                               std::span<const std::uint8_t> associated_data);
// Throws core::Error when the tag does not verify (forged, corrupted or misaddressed ciphertext).
std::vector<std::uint8_t> open(const Key32& key, std::span<const std::uint8_t> sealed,
                               std::span<const std::uint8_t> associated_data);

// ---- Shamir t-of-n over GF(2^61 - 1) ----------------------------------------------------------

inline constexpr std::uint64_t kShamirPrime = (1ull << 61) - 1;
inline constexpr std::size_t kShamirChunkBytes = 7;   // 56 bits < 61: every chunk is a field element
inline constexpr std::size_t kMaxShamirChunks = 64;   // secrets of at most 448 bytes

struct ShamirShare {
  std::uint32_t x = 0;
  std::vector<std::uint64_t> y;  // one field element per 7-byte little-endian chunk of the secret
  bool operator==(const ShamirShare&) const = default;
};

constexpr std::size_t shamir_chunk_count(std::size_t secret_size) {
  return (secret_size + kShamirChunkBytes - 1) / kShamirChunkBytes;
}

// Shares at x = 1..shares; 1 <= threshold <= shares <= 100000; coefficients from the CSPRNG.
std::vector<ShamirShare> shamir_split(std::span<const std::uint8_t> secret, std::uint32_t threshold,
                                      std::uint32_t shares);
// Lagrange interpolation at 0 through all the given shares (at least `threshold`). Throws
// core::Error on too few shares, a duplicate or zero x, a y outside the field, a wrong chunk count,
// or a result that is not a valid chunk (what inconsistent shares almost always give).
std::vector<std::uint8_t> shamir_combine(std::span<const ShamirShare> shares, std::uint32_t threshold,
                                         std::size_t secret_size);
// True when all the shares lie on one polynomial of degree < threshold (always, for <= threshold
// shares). Throws like shamir_combine on malformed shares.
bool shamir_consistent(std::span<const ShamirShare> shares, std::uint32_t threshold);

// ---- fixed-point encoding into Z_{2^32} ------------------------------------------------------

// scale = floor((2^31 - 1) / (clip * max_participants)): the sum of max_participants clipped values
// stays inside int32, so the mod-2^32 sum decodes without wrapping.
struct FixedPoint {
  double clip = 1.0;
  std::uint32_t max_participants = 1;
  double scale() const;  // throws core::Error on a non-positive clip, 0 participants, or scale < 1
};
// Clamps to [-clip, clip] (and the encoded integer to floor((2^31-1)/max_participants), so that
// rounding up cannot wrap either); throws core::Error on NaN or Inf. out.size() == values.size().
void encode_fixed_point(std::span<const float> values, const FixedPoint& fp, std::span<std::uint32_t> out);
// Reads each word as two's-complement int32 and divides by the scale.
void decode_fixed_point(std::span<const std::uint32_t> sum, const FixedPoint& fp, std::span<float> out);

// ---- messages ---------------------------------------------------------------------------------
//
// Wire format: "AGSA", version byte, message-type byte, round id, then the fields. Integers are
// little-endian; strings are u16 length + bytes; lists are u32 count + items. Every length is
// checked against its limit and against the bytes left before anything is allocated; trailing
// bytes are an error. decode() throws core::Error on any malformed input; encode() throws on
// values that decode would refuse, so a peer never receives what it cannot read.

inline constexpr std::uint8_t kSecAggWireVersion = 1;
inline constexpr std::size_t kMaxIdBytes = 128;                 // participant and round ids
inline constexpr std::uint32_t kMaxParticipants = 100000;
inline constexpr std::uint64_t kMaxVectorLength = 1ull << 28;   // words
inline constexpr std::size_t kMaxCiphertextBytes = 4096;

enum class SecAggMessageType : std::uint8_t {
  Params = 1,
  AdvertiseKeys = 2,
  KeyDirectory = 3,
  ShareUpload = 4,
  ShareDelivery = 5,
  MaskedInput = 6,
  UnmaskRequest = 7,
  UnmaskResponse = 8,
};
// Reads the header only (magic, version, type) so that a transport can dispatch; throws core::Error.
SecAggMessageType peek_message_type(std::span<const std::uint8_t> bytes);

// Participant and round ids: 1..128 bytes, no control bytes (they end up in error messages and
// logs). Throws core::Error naming `what`.
void check_identifier(std::string_view id, std::string_view what);

// threshold: how many participants must survive (and how many shares rebuild a secret). Take it
// above half the participants: without the malicious-model consistency round, a server that lies
// about who dropped could otherwise collect both the b-shares and the s_sk-shares of one participant
// from two disjoint groups of threshold survivors. Not enforced here, because only the caller knows
// how many participants to expect.
struct SecAggParams {
  std::string round_id;
  std::uint32_t threshold = 2;
  std::uint64_t vector_length = 0;
  std::vector<std::uint8_t> encode() const;
  static SecAggParams decode(std::span<const std::uint8_t> bytes);
  bool operator==(const SecAggParams&) const = default;
};

struct AdvertiseKeys {
  std::string round_id;
  std::string participant;
  Key32 c_public{};  // encrypts shares between participants
  Key32 s_public{};  // agrees the pairwise mask seeds
  std::vector<std::uint8_t> encode() const;
  static AdvertiseKeys decode(std::span<const std::uint8_t> bytes);
  bool operator==(const AdvertiseKeys&) const = default;
};

// Sorted by participant id; the Shamir x of participants[i] is i + 1. The entries travel without
// their own round id and decode with the directory's.
struct KeyDirectory {
  std::string round_id;
  std::uint32_t threshold = 0;
  std::vector<AdvertiseKeys> participants;
  std::vector<std::uint8_t> encode() const;
  static KeyDirectory decode(std::span<const std::uint8_t> bytes);
  bool operator==(const KeyDirectory&) const = default;
};

struct EncryptedShare {
  std::string from;
  std::string to;
  std::vector<std::uint8_t> ciphertext;
  bool operator==(const EncryptedShare&) const = default;
};

struct ShareUpload {
  std::string round_id;
  std::string participant;
  std::vector<EncryptedShare> shares;  // one per other directory member
  std::vector<std::uint8_t> encode() const;
  static ShareUpload decode(std::span<const std::uint8_t> bytes);
  bool operator==(const ShareUpload&) const = default;
};

struct ShareDelivery {
  std::string round_id;
  std::vector<EncryptedShare> shares;  // those addressed to one participant
  std::vector<std::uint8_t> encode() const;
  static ShareDelivery decode(std::span<const std::uint8_t> bytes);
  bool operator==(const ShareDelivery&) const = default;
};

struct MaskedInput {
  std::string round_id;
  std::string participant;
  std::vector<std::uint32_t> masked;
  std::vector<std::uint8_t> encode() const;
  static MaskedInput decode(std::span<const std::uint8_t> bytes);
  bool operator==(const MaskedInput&) const = default;
};

struct UnmaskRequest {
  std::string round_id;
  std::vector<std::string> survivors;  // U3: sent a masked input
  std::vector<std::string> dropped;    // U2 \ U3: shared keys, then went silent
  std::vector<std::uint8_t> encode() const;
  static UnmaskRequest decode(std::span<const std::uint8_t> bytes);
  bool operator==(const UnmaskRequest&) const = default;
};

struct RevealedShare {
  std::string owner;  // whose secret this is a share of
  ShamirShare share;
  bool operator==(const RevealedShare&) const = default;
};

struct UnmaskResponse {
  std::string round_id;
  std::string participant;
  std::vector<RevealedShare> self_mask_shares;  // shares of b, one per survivor
  std::vector<RevealedShare> key_shares;        // shares of s_sk, one per dropped participant
  std::vector<std::uint8_t> encode() const;
  static UnmaskResponse decode(std::span<const std::uint8_t> bytes);
  bool operator==(const UnmaskResponse&) const = default;
};

// ---- the protocol -----------------------------------------------------------------------------

// The plaintext sealed from one participant to another: x (u32) and the y of the s_sk share and of
// the b share (5 field elements each, for 32-byte secrets).
inline constexpr std::size_t kSecretChunks = shamir_chunk_count(32);
inline constexpr std::size_t kSharePlaintextBytes = 4 + 2 * kSecretChunks * 8;
inline constexpr std::size_t kSealedShareBytes = kSharePlaintextBytes + kSealOverheadBytes;

// One participant, one round. Each stage may be called once, in order; every refusal is a
// core::Error that leaves the client as it was.
class SecAggClient {
 public:
  SecAggClient(std::string participant, SecAggParams params);
  ~SecAggClient();  // wipes the private keys, the self-mask seed and the shares it holds
  SecAggClient(SecAggClient&&) = default;
  SecAggClient& operator=(SecAggClient&&) = default;
  SecAggClient(const SecAggClient&) = delete;
  SecAggClient& operator=(const SecAggClient&) = delete;

  // Fresh c and s key pairs.
  AdvertiseKeys advertise();
  // Checks: same round and threshold, self present with its own keys, >= threshold participants,
  // sorted without duplicate ids, no key used twice. Shamir-shares s_sk and a fresh self-mask seed
  // b, and seals each pair of shares to each other participant.
  ShareUpload share_keys(const KeyDirectory& directory);
  // Opens every share addressed to it (refuses forged ones); those who shared are U2. Returns
  // y = x + PRG(b) + sum over v in U2, v != u, of (u < v ? +PRG(s_uv) : -PRG(s_uv)), where
  // s_uv = HKDF(X25519(s_sk_u, s_pk_v), salt = round id).
  MaskedInput masked_input(const ShareDelivery& delivery, std::span<const std::uint32_t> input);
  // Refuses when survivors < threshold, a participant is both survivor and dropped (or listed
  // twice), it is not itself a survivor, the request names someone outside U2 or leaves out someone
  // in U2. Reveals b-shares of survivors and s_sk-shares of the dropped, never both for one id.
  UnmaskResponse unmask(const UnmaskRequest& request);

  const std::string& participant() const { return participant_; }

 private:
  enum class Stage { Created, Advertised, SharedKeys, SentMaskedInput, Unmasked };
  struct HeldShares {  // the shares of one owner's secrets that this participant holds
    ShamirShare key_share;
    ShamirShare mask_share;
  };
  void require_stage(Stage expected, std::string_view call) const;
  const AdvertiseKeys& directory_entry(const std::string& participant) const;

  std::string participant_;
  SecAggParams params_;
  Stage stage_ = Stage::Created;
  X25519KeyPair c_keys_;
  X25519KeyPair s_keys_;
  Key32 self_mask_seed_{};
  std::vector<AdvertiseKeys> directory_;
  std::map<std::string, std::size_t> directory_index_;
  std::uint32_t own_x_ = 0;
  std::map<std::string, HeldShares> held_;  // U2 as this participant saw it, itself included
};

// The aggregator's side of one round; it only ever holds masked inputs.
class SecAggServer {
 public:
  explicit SecAggServer(SecAggParams params);

  // Throws core::Error (saying which) on a wrong round, a duplicate participant (replay), a key
  // used twice, or arriving after directory().
  void receive_keys(const AdvertiseKeys& message);
  // Closes stage 0 on the first call (later calls return the same directory); throws when fewer
  // than threshold participants advertised.
  KeyDirectory directory();
  // Throws on a wrong round, a sender not in the directory, shares not exactly one per other
  // directory member (or from someone else, or of the wrong size), early, late or duplicate.
  void receive_shares(const ShareUpload& message);
  // Closes stage 1 on the first call (throws while fewer than threshold uploaded); only senders
  // that uploaded shares are in U2. Throws for a participant outside U2.
  ShareDelivery delivery_for(const std::string& participant);
  // Throws on a wrong round, a sender not in U2, a wrong length, duplicate, early or late.
  void receive_masked(const MaskedInput& message);
  // Closes stage 2 on the first call: survivors = U3 (sent masked input), dropped = U2 \ U3;
  // throws when |U3| < threshold. Later calls return the same request.
  UnmaskRequest unmask_request();
  // Throws on a wrong round, a sender that is not a survivor, duplicate, early, late, or shares
  // that do not match the request (a missing or extra owner, an x that is not the sender's).
  void receive_unmask(const UnmaskResponse& message);
  bool can_finish() const;  // unmask request issued and >= threshold responses
  // Rebuilds b of every survivor and s_sk of every dropped participant, removes the masks and
  // returns the sum over U3 of the inputs mod 2^32. Throws when shares are inconsistent (they do
  // not lie on one polynomial, or a rebuilt s_sk does not match the advertised s_pk). Once.
  std::vector<std::uint32_t> finish();
  std::vector<std::string> survivors() const;  // U3 so far

 private:
  enum class Stage { CollectingKeys, CollectingShares, CollectingMasked, Unmasking, Finished };
  void require_round(const std::string& round_id, std::string_view what) const;

  SecAggParams params_;
  Stage stage_ = Stage::CollectingKeys;
  std::map<std::string, AdvertiseKeys> keys_;
  std::set<Key32> seen_keys_;
  KeyDirectory directory_;
  std::map<std::string, std::uint32_t> shamir_x_;        // directory member -> x
  std::map<std::string, std::vector<EncryptedShare>> uploads_;  // U2
  std::map<std::string, std::vector<std::uint32_t>> masked_;    // U3
  UnmaskRequest request_;
  std::map<std::string, UnmaskResponse> responses_;
};

}  // namespace aegis::federated
