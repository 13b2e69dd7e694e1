#include "aegis/provenance/signature.h"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <cstring>
#include <map>
#include <set>

#include "aegis/core/base64.h"
#include "aegis/core/error.h"
#include "aegis/core/json_shape.h"
#include "aegis/core/python_repr.h"

namespace aegis::provenance {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr std::size_t kMaxBundleBytes = 16u << 20;
constexpr int kMaxJsonDepth = 64;

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;

std::string openssl_error() {
  unsigned long code = ERR_get_error();
  if (code == 0) return "no detail from OpenSSL";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  ERR_clear_error();
  return text;
}

std::string read_small_file(const fs::path& path, std::size_t limit, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot read the " + what + " " + path.string(), "check the path and its permissions");
  std::string text;
  text.resize(limit + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > limit)
    throw core::Error("the " + what + " " + path.string() + " is larger than " + std::to_string(limit >> 20) + " MiB",
                      "check that this is the right file");
  return text;
}

// JSON from a file we do not trust yet: nesting is checked before the recursive parser sees it.
json parse_untrusted_json(std::string_view text, const std::string& what) {
  if (core::measure_json(text, kMaxJsonDepth).depth > kMaxJsonDepth)
    throw core::Error(what + " is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) throw core::Error(what + " is not valid JSON", "check that the file is a model-signing bundle");
  return doc;
}

const json& member(const json& object, const char* key, json::value_t type, const std::string& where) {
  if (!object.is_object() || !object.contains(key) || object[key].type() != type)
    throw core::Error(where + " lacks '" + key + "' of the expected type", "the bundle is malformed or of an unknown version");
  return object[key];
}

std::string decode_field(const std::string& text, const std::string& where) {
  auto bytes = core::decode_base64(text);
  if (!bytes) throw core::Error(where + " is not valid base64", "the bundle is malformed");
  return std::string(bytes->begin(), bytes->end());
}

const EVP_MD* digest_for(EVP_PKEY* key) {
  int bits = EVP_PKEY_get_bits(key);
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) return nullptr;
  return bits <= 256 ? EVP_sha256() : bits <= 384 ? EVP_sha384() : EVP_sha512();
}


int passphrase_callback(char* buffer, int size, int, void* user) {
  const auto* passphrase = static_cast<const std::string*>(user);
  if (!passphrase || passphrase->empty()) return 0;
  int n = std::min<int>(size, static_cast<int>(passphrase->size()));
  std::memcpy(buffer, passphrase->data(), static_cast<std::size_t>(n));
  return n;
}

PKey load_private_key(const fs::path& path, const std::string& passphrase) {
  std::string pem = read_small_file(path, 1 << 20, "private key");
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PKey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, passphrase_callback, const_cast<std::string*>(&passphrase)));
  if (!key)
    throw core::Error("cannot read the private key " + path.string() + ": " + openssl_error(),
                      "pass a PEM ECDSA key; for an encrypted key set AEGIS_KEY_PASSPHRASE or type the passphrase at the prompt");
  if (!digest_for(key.get()))
    throw core::Error("the key " + path.string() + " is not an ECDSA key", "use `aegis keygen` or an EC P-256/384/521 key");
  return key;
}

PKey load_public_key(const fs::path& path) {
  std::string pem = read_small_file(path, 1 << 20, "public key");
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PKey key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) throw core::Error("cannot read the public key " + path.string() + ": " + openssl_error(), "pass a PEM public key");
  return key;
}

std::string pem_public_key(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

// model_signing v0.2 signed a different byte string (a bug its later versions still accept): the
// header spelled "DSSEV1", the payload written as Python's repr() of the bytes, and SHA-256 whatever
// the curve. Rebuilt here from that description, to verify those signatures and nothing else.
std::string legacy_v02_message(std::string_view payload_type, std::string_view payload) {
  const bool has_single = payload.find('\'') != std::string_view::npos;
  const bool has_double = payload.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string repr = "b";
  repr += quote;
  core::append_python_escaped(repr, payload, quote, true, std::string::npos);
  repr += quote;
  return "DSSEV1 " + std::to_string(payload_type.size()) + " " + std::string(payload_type) + " " +
         std::to_string(payload.size()) + " " + repr;
}

bool verify_with(EVP_PKEY* key, const EVP_MD* md, std::string_view message, std::string_view signature) {
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key) != 1) return false;
  int status = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                                reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();
  return status == 1;
}

std::string method_name(HashMethod method) { return method == HashMethod::Shards ? "shards" : "files"; }

}  // namespace

std::string dsse_pae(std::string_view payload_type, std::string_view payload) {
  std::string out = "DSSEv1 " + std::to_string(payload_type.size()) + " ";
  out += payload_type;
  out += " " + std::to_string(payload.size()) + " ";
  out += payload;
  return out;
}

std::string public_key_hint(std::string_view public_pem) {
  return to_hex(sha256(public_pem.data(), public_pem.size()));
}

Bundle parse_bundle(std::string_view text) {
  if (text.size() > kMaxBundleBytes) throw core::Error("the signature bundle is larger than 16 MiB", "check the file");
  json doc = parse_untrusted_json(text, "the signature bundle");
  Bundle bundle;
  bundle.media_type = member(doc, "mediaType", json::value_t::string, "the bundle").get<std::string>();
  const auto& envelope = member(doc, "dsseEnvelope", json::value_t::object, "the bundle");
  bundle.payload_type = member(envelope, "payloadType", json::value_t::string, "the DSSE envelope").get<std::string>();
  bundle.payload = decode_field(member(envelope, "payload", json::value_t::string, "the DSSE envelope"), "the DSSE payload");
  for (const auto& signature : member(envelope, "signatures", json::value_t::array, "the DSSE envelope"))
    bundle.signatures.push_back(
        decode_field(member(signature, "sig", json::value_t::string, "a DSSE signature"), "a DSSE signature"));
  if (bundle.signatures.empty()) throw core::Error("the DSSE envelope carries no signature", "the bundle is malformed");
  const auto& material = member(doc, "verificationMaterial", json::value_t::object, "the bundle");
  if (material.contains("publicKey") && material["publicKey"].is_object() && material["publicKey"].contains("hint") &&
      material["publicKey"]["hint"].is_string())
    bundle.public_key_hint = material["publicKey"]["hint"].get<std::string>();
  if (material.contains("x509CertificateChain")) {
    const auto& chain = member(material, "x509CertificateChain", json::value_t::object, "the verification material");
    for (const auto& certificate : member(chain, "certificates", json::value_t::array, "the certificate chain"))
      bundle.certificate_chain.push_back(decode_field(
          member(certificate, "rawBytes", json::value_t::string, "a certificate"), "a certificate"));
  }
  return bundle;
}

SignedManifest parse_statement(std::string_view payload) {
  json statement = parse_untrusted_json(payload, "the signed statement");
  if (member(statement, "_type", json::value_t::string, "the statement") != kStatementType)
    throw core::Error("the signed statement is not an in-toto Statement v1", "the bundle is of an unknown kind");
  SignedManifest signed_manifest;
  signed_manifest.predicate_type = member(statement, "predicateType", json::value_t::string, "the statement");
  const auto& subjects = member(statement, "subject", json::value_t::array, "the statement");
  if (signed_manifest.predicate_type == kPredicateV1) {
    if (subjects.size() != 1) throw core::Error("the statement names " + std::to_string(subjects.size()) + " subjects, not one");
    signed_manifest.subject_name = member(subjects[0], "name", json::value_t::string, "the subject");
    signed_manifest.subject_digest_hex =
        member(member(subjects[0], "digest", json::value_t::object, "the subject"), "sha256", json::value_t::string,
               "the subject's digest");
    const auto& predicate = member(statement, "predicate", json::value_t::object, "the statement");
    const auto& serialization = member(predicate, "serialization", json::value_t::object, "the predicate");
    std::string method = member(serialization, "method", json::value_t::string, "the serialization");
    if (method == "shards") {
      signed_manifest.method = HashMethod::Shards;
      if (!serialization.contains("shard_size") || !serialization["shard_size"].is_number_unsigned() ||
          serialization["shard_size"].get<std::uint64_t>() == 0)
        throw core::Error("the statement's shard serialization has no valid shard_size");
      signed_manifest.shard_size = serialization["shard_size"];
    } else if (method != "files") {
      throw core::Error("the statement uses serialization method '" + method + "', which Aegis does not know",
                        "only 'files' and 'shards' are defined by the specification");
    }
    if (serialization.value("hash_type", std::string("sha256")) != "sha256")
      throw core::Error("the statement uses hash type '" + serialization.value("hash_type", std::string()) +
                        "'; Aegis checks sha256 manifests");
    signed_manifest.allow_symlinks = serialization.value("allow_symlinks", false);
    if (serialization.contains("ignore_paths") && serialization["ignore_paths"].is_array())
      for (const auto& path : serialization["ignore_paths"])
        if (path.is_string()) signed_manifest.ignore_paths.push_back(path);
    for (const auto& resource : member(predicate, "resources", json::value_t::array, "the predicate")) {
      if (resource.value("algorithm", std::string("sha256")) != "sha256")
        throw core::Error("a resource of the statement is not a sha256 digest");
      signed_manifest.resources.emplace_back(member(resource, "name", json::value_t::string, "a resource"),
                                             member(resource, "digest", json::value_t::string, "a resource"));
    }
  } else if (signed_manifest.predicate_type == kPredicateV01) {
    // v0.2 of the reference: one subject per file, named by its path, no subject over the whole.
    for (const auto& subject : subjects)
      signed_manifest.resources.emplace_back(
          member(subject, "name", json::value_t::string, "a subject"),
          member(member(subject, "digest", json::value_t::object, "a subject"), "sha256", json::value_t::string,
                 "a subject's digest"));
  } else {
    throw core::Error("the statement's predicate type '" + signed_manifest.predicate_type + "' is not a model signature",
                      "Aegis verifies " + std::string(kPredicateV1) + " and " + std::string(kPredicateV01));
  }
  std::sort(signed_manifest.resources.begin(), signed_manifest.resources.end());
  return signed_manifest;
}

std::string sign_model(const fs::path& model, const SignOptions& options) {
  PKey key = load_private_key(options.private_key, options.passphrase);
  ManifestOptions manifest_options = options.manifest;
  if (!options.signature_path.empty()) manifest_options.ignore_paths.push_back(options.signature_path.string());
  Manifest manifest = build_manifest(model, manifest_options);

  json serialization = {{"method", method_name(manifest.method)}, {"hash_type", "sha256"},
                        {"allow_symlinks", manifest_options.allow_symlinks}};
  if (manifest.method == HashMethod::Shards) serialization["shard_size"] = manifest.shard_size;
  serialization["ignore_paths"] = manifest.ignored;
  json resources = json::array();
  for (const auto& resource : manifest.resources)
    resources.push_back({{"name", resource.name}, {"digest", to_hex(resource.digest)}, {"algorithm", "sha256"}});
  json statement = {{"_type", kStatementType},
                    {"subject", json::array({{{"name", manifest.model_name},
                                              {"digest", {{"sha256", to_hex(manifest.subject_digest())}}}}})},
                    {"predicateType", kPredicateV1},
                    {"predicate", {{"serialization", serialization}, {"resources", resources}}}};
  std::string payload = statement.dump();
  std::string message = dsse_pae(kInTotoPayloadType, payload);

  MdCtx ctx(EVP_MD_CTX_new());
  std::size_t length = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, digest_for(key.get()), nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1)
    throw core::Error("OpenSSL could not sign: " + openssl_error());
  std::string signature(length, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1)
    throw core::Error("OpenSSL could not sign: " + openssl_error());
  signature.resize(length);

  json material = {{"publicKey", {{"hint", public_key_hint(pem_public_key(key.get()))}}}, {"tlogEntries", json::array()}};
  if (!options.certificate_chain.empty()) {
    json certificates = json::array();
    for (const auto& path : options.certificate_chain) {
      std::string text = read_small_file(path, 1 << 20, "certificate");
      Bio bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
      std::size_t read = 0;
      while (X509Ptr certificate{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
        // The first certificate must be the signing key's own.
        if (certificates.empty() && X509_check_private_key(certificate.get(), key.get()) != 1)
          throw core::Error("the certificate in " + path.string() + " is not for the signing key",
                            "pass the signing key's certificate first, then its intermediates");
        unsigned char* der = nullptr;
        int size = i2d_X509(certificate.get(), &der);
        if (size <= 0) throw core::Error("cannot encode a certificate from " + path.string() + ": " + openssl_error());
        certificates.push_back({{"rawBytes", core::encode_base64(std::span<const std::uint8_t>(der, static_cast<std::size_t>(size)))}});
        OPENSSL_free(der);
        ++read;
      }
      ERR_clear_error();
      if (read == 0) throw core::Error("no PEM certificate in " + path.string(), "pass PEM certificate files");
    }
    material = {{"x509CertificateChain", {{"certificates", certificates}}}, {"tlogEntries", json::array()}};
  }
  json bundle = {{"mediaType", kBundleMediaType},
                 {"verificationMaterial", material},
                 {"dsseEnvelope", {{"payload", core::encode_base64(payload)},
                                   {"payloadType", kInTotoPayloadType},
                                   {"signatures", json::array({{{"sig", core::encode_base64(signature)}, {"keyid", ""}}})}}}};
  return bundle.dump();
}

VerifyResult verify_model(const fs::path& model, const fs::path& bundle_path, const VerifyOptions& options) {
  if (options.public_key.has_value() == options.certificate_chain.has_value())
    throw core::Error("verify needs exactly one of a public key and a certificate chain",
                      "pass --key PUB.pem for key signatures or --certificate-chain CA.pem for certificate ones");
  VerifyResult result;
  std::string text = read_small_file(bundle_path, kMaxBundleBytes, "signature");
  Bundle bundle;
  SignedManifest signed_manifest;
  try {
    bundle = parse_bundle(text);
    if (bundle.media_type.rfind("application/vnd.dev.sigstore.bundle", 0) != 0)
      throw core::Error("the bundle's media type '" + bundle.media_type + "' is not a Sigstore bundle");
    if (bundle.payload_type != kInTotoPayloadType)
      throw core::Error("the DSSE payload type '" + bundle.payload_type + "' is not in-toto");
  } catch (const core::Error& error) {
    result.failure = std::string("malformed signature: ") + error.what();
    return result;
  }

  // 1. The signature, by the key or by the certificate chain.
  PKey key;
  if (options.public_key) {
    key = load_public_key(*options.public_key);
    result.signer = "key " + public_key_hint(pem_public_key(key.get()));
  } else {
    if (bundle.certificate_chain.empty()) {
      result.failure = "the bundle carries no certificate chain: it was not made with the certificate method";
      return result;
    }
    std::vector<X509Ptr> chain;
    for (const auto& der : bundle.certificate_chain) {
      const unsigned char* at = reinterpret_cast<const unsigned char*>(der.data());
      X509Ptr certificate(d2i_X509(nullptr, &at, static_cast<long>(der.size())));
      if (!certificate) {
        result.failure = "a certificate in the bundle cannot be read: " + openssl_error();
        return result;
      }
      chain.push_back(std::move(certificate));
    }
    std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>> store(X509_STORE_new());
    std::string ca_text = read_small_file(*options.certificate_chain, 1 << 20, "certificate chain");
    Bio bio(BIO_new_mem_buf(ca_text.data(), static_cast<int>(ca_text.size())));
    std::size_t trusted = 0;
    while (X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store.get(), ca);
      X509_free(ca);
      ++trusted;
    }
    ERR_clear_error();
    if (trusted == 0)
      throw core::Error("no certificate could be read from " + options.certificate_chain->string(),
                        "pass the PEM certificates of the CA you trust");
    std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> untrusted(sk_X509_new_null(),
                                                                         [](STACK_OF(X509)* s) { sk_X509_free(s); });
    for (std::size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());
    std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>> ctx(X509_STORE_CTX_new());
    X509_STORE_CTX_init(ctx.get(), store.get(), chain[0].get(), untrusted.get());
    if (X509_verify_cert(ctx.get()) != 1) {
      result.failure = std::string("the signing certificate does not chain to the trusted CA: ") +
                       X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
      return result;
    }
    key.reset(X509_get_pubkey(chain[0].get()));
    char subject[256] = {};
    X509_NAME_oneline(X509_get_subject_name(chain[0].get()), subject, sizeof subject);
    result.signer = std::string("certificate ") + subject;
  }
  const std::string message = dsse_pae(bundle.payload_type, bundle.payload);
  const EVP_MD* md = digest_for(key.get());
  bool signed_ok = md && std::any_of(bundle.signatures.begin(), bundle.signatures.end(), [&](const std::string& signature) {
    return verify_with(key.get(), md, message, signature);
  });
  if (!signed_ok && md) {
    const std::string legacy = legacy_v02_message(bundle.payload_type, bundle.payload);
    signed_ok = std::any_of(bundle.signatures.begin(), bundle.signatures.end(), [&](const std::string& signature) {
      return verify_with(key.get(), EVP_sha256(), legacy, signature);
    });
    if (signed_ok) result.signer += " (model_signing v0.2 signature encoding)";
  }
  if (!signed_ok) {
    result.failure = "the signature does not verify with this key: the statement was changed or signed by someone else";
    return result;
  }

  // 2. What was signed, then the folder hashed the same way.
  try {
    signed_manifest = parse_statement(bundle.payload);
  } catch (const core::Error& error) {
    result.failure = std::string("the signed statement cannot be used: ") + error.what();
    return result;
  }
  result.predicate_type = signed_manifest.predicate_type;
  ManifestOptions manifest_options;
  manifest_options.method = signed_manifest.method;
  if (signed_manifest.method == HashMethod::Shards) manifest_options.shard_size = signed_manifest.shard_size;
  manifest_options.allow_symlinks = signed_manifest.allow_symlinks;
  manifest_options.ignore_paths = signed_manifest.ignore_paths;
  for (const auto& path : options.ignore_paths) manifest_options.ignore_paths.push_back(path);
  manifest_options.ignore_paths.push_back(options.signature_path.empty() ? bundle_path.string() : options.signature_path.string());
  manifest_options.threads = options.threads;
  Manifest manifest;
  try {
    manifest = build_manifest(model, manifest_options);
  } catch (const core::Error& error) {
    result.failure = std::string("the model cannot be hashed: ") + error.what();
    return result;
  }
  std::map<std::string, std::string> signed_digests(signed_manifest.resources.begin(), signed_manifest.resources.end());
  std::map<std::string, std::string> actual;
  for (const auto& resource : manifest.resources) {
    // v0.1 named a single-file model by its file name.
    std::string name = resource.name == "." && signed_manifest.predicate_type == kPredicateV01 ? manifest.model_name : resource.name;
    actual[name] = to_hex(resource.digest);
  }
  for (const auto& [name, digest] : actual) {
    auto it = signed_digests.find(name);
    if (it == signed_digests.end()) result.added.push_back(name);
    else if (it->second != digest) result.changed.push_back(name);
  }
  for (const auto& [name, digest] : signed_digests)
    if (!actual.contains(name)) result.removed.push_back(name);
  result.resources = actual.size();
  if (!result.added.empty() || !result.removed.empty() || !result.changed.empty()) {
    result.failure = "the model differs from what was signed";
    return result;
  }
  // The subject digest binds the list; a statement whose subject disagrees with its own resources
  // was not made by a conforming signer.
  if (!signed_manifest.subject_digest_hex.empty() && signed_manifest.subject_digest_hex != to_hex(manifest.subject_digest())) {
    result.failure = "the statement's subject digest does not match its resources";
    return result;
  }
  result.ok = true;
  return result;
}

KeyPair generate_key(const std::string& passphrase) {
  PKey key(EVP_EC_gen("P-256"));
  if (!key) throw core::Error("OpenSSL could not generate a P-256 key: " + openssl_error());
  Bio private_bio(BIO_new(BIO_s_mem()));
  int ok = passphrase.empty()
               ? PEM_write_bio_PrivateKey(private_bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr)
               : PEM_write_bio_PKCS8PrivateKey(private_bio.get(), key.get(), EVP_aes_256_cbc(), passphrase.data(),
                                               static_cast<int>(passphrase.size()), nullptr, nullptr);
  if (ok != 1) throw core::Error("OpenSSL could not write the private key: " + openssl_error());
  char* data = nullptr;
  long size = BIO_get_mem_data(private_bio.get(), &data);
  return {std::string(data, static_cast<std::size_t>(size)), pem_public_key(key.get())};
}

}  // namespace aegis::provenance
