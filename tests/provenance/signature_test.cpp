// Model signatures: the reference implementation's golden bundles verify, Aegis's bundles verify
// with an independent verifier written from the format, and every kind of tampering is caught.
#include "aegis/provenance/signature.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "aegis/core/error.h"
#include "test_support.h"

namespace aegis::provenance {
namespace {

namespace fs = std::filesystem;

void write(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read(const fs::path& path) {
  auto bytes = test::read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

// A signed model folder, its keys and its signature.
struct Signed {
  test::TempDir temp{"aegis_sign"};
  fs::path model, key, pub, signature;
  explicit Signed(HashMethod method = HashMethod::Files, const std::string& passphrase = "", int layers = 2) {
    model = temp.path / "model";
    write(model / "config.json", "{\"layers\": " + std::to_string(layers) + "}");
    write(model / "weights/layer-0.bin", std::string(5000, 'a'));
    write(model / "weights/layer-1.bin", std::string(3000, 'b'));
    write(model / ".git/HEAD", "ref");
    auto pair = generate_key(passphrase);
    key = temp.path / "key.pem";
    pub = temp.path / "key.pub.pem";
    write(key, pair.private_pem);
    write(pub, pair.public_pem);
    signature = model / "model.sig";
    SignOptions options;
    options.private_key = key;
    options.passphrase = passphrase;
    options.manifest.method = method;
    options.manifest.shard_size = 2048;
    options.signature_path = signature;
    write(signature, sign_model(model, options));
  }
  VerifyResult verify(const fs::path& public_key) const {
    VerifyOptions options;
    options.public_key = public_key;
    options.signature_path = signature;
    return verify_model(model, signature, options);
  }
  VerifyResult verify() const { return verify(pub); }
};

TEST(Signature, DssePreAuthenticationEncodingIsAsSpecified) {
  EXPECT_EQ(dsse_pae("http://example.com/HelloWorld", "hello world"),
            "DSSEv1 29 http://example.com/HelloWorld 11 hello world");
}

TEST(Signature, SignedFolderVerifiesAndGitMetadataIsIgnored) {
  Signed s;
  auto result = s.verify();
  EXPECT_TRUE(result.ok) << result.failure;
  EXPECT_EQ(result.resources, 3u);
  write(s.model / ".git/HEAD", "another ref");  // not part of the model
  EXPECT_TRUE(s.verify().ok);
}

TEST(Signature, IndependentVerifierAcceptsAegisBundles) {
  Signed s;
  std::string command = "/usr/bin/python3 '" + (test::source_dir() / "tests/provenance/independent_verify.py").string() +
                        "' '" + s.model.string() + "' '" + s.signature.string() + "' '" + s.pub.string() + "'";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  write(s.model / "config.json", "{\"layers\": 3}");
  EXPECT_NE(std::system((command + " > /dev/null").c_str()), 0) << "the independent verifier must catch a change too";
}

TEST(Signature, EveryKindOfTamperingIsReportedByName) {
  {
    Signed s;
    auto bytes = read(s.model / "weights/layer-0.bin");
    bytes[100] ^= 1;
    write(s.model / "weights/layer-0.bin", bytes);
    auto r = s.verify();
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.changed, std::vector<std::string>{"weights/layer-0.bin"});
  }
  {
    Signed s;
    fs::rename(s.model / "weights/layer-1.bin", s.model / "weights/layer-9.bin");
    auto r = s.verify();
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.added, std::vector<std::string>{"weights/layer-9.bin"});
    EXPECT_EQ(r.removed, std::vector<std::string>{"weights/layer-1.bin"});
  }
  {
    Signed s;
    write(s.model / "extra.py", "import os");
    auto r = s.verify();
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.added, std::vector<std::string>{"extra.py"});
  }
  {
    Signed s(HashMethod::Shards);
    fs::resize_file(s.model / "weights/layer-0.bin", 4500);  // the last shard cut short
    auto r = s.verify();
    EXPECT_FALSE(r.ok);
    EXPECT_FALSE(r.changed.empty() && r.removed.empty());
  }
}

TEST(Signature, WrongKeySwappedSignatureAndMalformedBundlesFailClosed) {
  Signed s, other(HashMethod::Files, "", 7);  // another model, signed by someone else
  auto wrong_key = s.verify(other.pub);
  EXPECT_FALSE(wrong_key.ok);
  EXPECT_NE(wrong_key.failure.find("signature"), std::string::npos) << wrong_key.failure;

  // Another folder's valid signature, put in this folder's place.
  fs::copy_file(other.signature, s.signature, fs::copy_options::overwrite_existing);
  EXPECT_FALSE(s.verify(other.pub).ok);

  for (const std::string& bad : {std::string("not json"), std::string("{}"), std::string(100000, '['),
                                 std::string("{\"mediaType\": \"application/vnd.dev.sigstore.bundle.v0.3+json\", "
                                             "\"dsseEnvelope\": {\"payload\": \"***\", \"payloadType\": \"x\", \"signatures\": []}, "
                                             "\"verificationMaterial\": {}}")}) {
    write(s.signature, bad);
    auto r = s.verify();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.failure.find("malformed"), std::string::npos) << r.failure;
  }
}

TEST(Signature, EncryptedKeysNeedTheirPassphrase) {
  Signed s(HashMethod::Files, "correct horse");
  EXPECT_TRUE(s.verify().ok);
  EXPECT_NE(read(s.key).find("ENCRYPTED"), std::string::npos);
  SignOptions options;
  options.private_key = s.key;
  options.passphrase = "wrong";
  EXPECT_THROW(sign_model(s.model, options), core::Error);
}

#ifdef AEGIS_SIGNING_VECTORS
// The reference implementation's golden signatures, verified with the flags its README gives.
TEST(Signature, ReferenceGoldenSignaturesVerify) {
  const fs::path vectors = AEGIS_SIGNING_VECTORS;
  struct Case {
    const char* folder;
    const char* model;  // relative to the vectors
    bool certificate;
  };
  for (const Case& c : {Case{"v0.2.0-certificate", "v0.2.0-certificate", true},
                        Case{"v0.3.1-certificate", "v0.3.1-certificate", true},
                        Case{"v0.3.1-elliptic-key", "v0.3.1-elliptic-key/signme-1", false},
                        Case{"v1.0.0-certificate", "v1.0.0-certificate", true},
                        Case{"v1.0.0-elliptic-key", "v1.0.0-elliptic-key/signme-1", false},
                        Case{"v1.0.1-certificate", "v1.0.1-certificate", true},
                        Case{"v1.0.1-elliptic-key", "v1.0.1-elliptic-key", false},
                        Case{"v1.1.0-certificate", "v1.1.0-certificate", true},
                        Case{"v1.1.0-elliptic-key", "v1.1.0-elliptic-key", false}}) {
    VerifyOptions options;
    if (c.certificate)
      options.certificate_chain = vectors / "keys/certificate/ca-cert.pem";
    else
      options.public_key = vectors / "keys/certificate/signing-key-pub.pem";
    options.ignore_paths = {(vectors / c.folder / "ignore-me").string()};
    auto result = verify_model(vectors / c.model, vectors / c.folder / "model.sig", options);
    EXPECT_TRUE(result.ok) << c.folder << ": " << result.failure;
    // And a wrong trust anchor is refused.
    VerifyOptions wrong = options;
    if (c.certificate) {
      wrong.certificate_chain = vectors / "keys/certificate/signing-key-cert.pem";
    } else {
      wrong.public_key.reset();
      wrong.certificate_chain = vectors / "keys/certificate/ca-cert.pem";
    }
    EXPECT_FALSE(verify_model(vectors / c.model, vectors / c.folder / "model.sig", wrong).ok) << c.folder;
  }
}

// Certificate method, made by Aegis with the reference's test PKI: it chains to the root CA.
TEST(Signature, CertificateMethodBundlesChainToTheTrustedCa) {
  const fs::path keys = fs::path(AEGIS_SIGNING_VECTORS) / "keys/certificate";
  test::TempDir temp("aegis_cert_sign");
  write(temp.path / "model/weights.bin", "weights");
  SignOptions options;
  options.private_key = keys / "signing-key.pem";
  options.certificate_chain = {keys / "signing-key-cert.pem", keys / "int-ca-cert.pem"};
  options.signature_path = temp.path / "model/model.sig";
  write(options.signature_path, sign_model(temp.path / "model", options));
  VerifyOptions verify;
  verify.certificate_chain = keys / "ca-cert.pem";
  auto result = verify_model(temp.path / "model", options.signature_path, verify);
  EXPECT_TRUE(result.ok) << result.failure;
  // A certificate that is not the key's is refused when signing.
  options.certificate_chain = {keys / "int-ca-cert.pem"};
  EXPECT_THROW(sign_model(temp.path / "model", options), core::Error);
}
#endif

}  // namespace
}  // namespace aegis::provenance
