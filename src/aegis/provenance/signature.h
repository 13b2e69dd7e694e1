// OpenSSF Model Signing: an in-toto Statement describing a manifest, in a DSSE envelope, in a
// Sigstore bundle (v0.3 JSON). Key method (ECDSA P-256/384/521 PEM keys) and certificate method
// (an X.509 chain in the bundle, checked against the CA certificates the user trusts). Verification
// fails closed: anything it cannot parse or check is an error, and a folder that differs from the
// signed manifest is reported file by file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/provenance/manifest.h"

namespace aegis::provenance {

inline constexpr std::string_view kBundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json";
inline constexpr std::string_view kInTotoPayloadType = "application/vnd.in-toto+json";
inline constexpr std::string_view kStatementType = "https://in-toto.io/Statement/v1";
inline constexpr std::string_view kPredicateV1 = "https://model_signing/signature/v1.0";
inline constexpr std::string_view kPredicateV01 = "https://model_signing/Digests/v0.1";

// DSSE's pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(body)> <body>".
std::string dsse_pae(std::string_view payload_type, std::string_view payload);

// A bundle as read from disk, before anything in it is trusted.
struct Bundle {
  std::string media_type;
  std::string payload_type;
  std::string payload;                           // the statement's JSON bytes (base64-decoded)
  std::vector<std::string> signatures;           // raw signature bytes (DER ECDSA)
  std::string public_key_hint;                   // key method: hex SHA-256 of the signer's PEM public key
  std::vector<std::string> certificate_chain;    // certificate method: DER, leaf first
};

// Parses a bundle (at most 16 MiB, JSON nested at most 64 deep). Throws core::Error saying what is
// wrong with it.
Bundle parse_bundle(std::string_view json);

// What a statement says was signed.
struct SignedManifest {
  std::string predicate_type;
  std::string subject_name;
  std::string subject_digest_hex;        // v1.0: over the resources; v0.1: empty (one subject per file)
  HashMethod method = HashMethod::Files;
  std::uint64_t shard_size = 0;
  bool allow_symlinks = false;
  std::vector<std::string> ignore_paths;
  std::vector<std::pair<std::string, std::string>> resources;  // name, hex digest (sorted by name)
};

SignedManifest parse_statement(std::string_view payload);

struct SignOptions {
  std::filesystem::path private_key;    // PEM, possibly encrypted
  std::string passphrase;               // for an encrypted key (from the environment or a prompt)
  ManifestOptions manifest;             // method, shard size, ignore paths, threads
  std::filesystem::path signature_path; // left out of the manifest
  // Certificate method: PEM files holding the signing certificate (for `private_key`) first, then
  // any intermediates; empty for the key method.
  std::vector<std::filesystem::path> certificate_chain;
};

// Hashes `model` and returns the bundle JSON (key method).
std::string sign_model(const std::filesystem::path& model, const SignOptions& options);

struct VerifyOptions {
  std::optional<std::filesystem::path> public_key;         // key method
  std::optional<std::filesystem::path> certificate_chain;  // certificate method: trusted CA certificates (PEM)
  std::vector<std::string> ignore_paths;                   // added to those the signature recorded
  std::filesystem::path signature_path;
  std::size_t threads = 0;
};

struct VerifyResult {
  bool ok = false;
  std::string failure;                 // why not, when !ok (signature, chain, statement, or content)
  std::string signer;                  // the key's hint or the leaf certificate's subject
  std::string predicate_type;
  std::vector<std::string> added, removed, changed;  // resource names
  std::size_t resources = 0;
};

// Checks the bundle's signature, then re-hashes `model` the way the statement says it was hashed and
// compares. Throws core::Error only for usage problems (unreadable key or signature file).
VerifyResult verify_model(const std::filesystem::path& model, const std::filesystem::path& bundle_path,
                          const VerifyOptions& options);

// Generates an ECDSA P-256 key pair as PEM; the private key is encrypted (AES-256-CBC) when a
// passphrase is given.
struct KeyPair {
  std::string private_pem;
  std::string public_pem;
};
KeyPair generate_key(const std::string& passphrase);

// Hex SHA-256 of the public key's PEM SubjectPublicKeyInfo as OpenSSL writes it (the bundle's hint).
std::string public_key_hint(std::string_view public_pem);

}  // namespace aegis::provenance
