#include "aegis/federated/pki.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "aegis/core/error.h"
#include "test_support.h"

namespace aegis::federated {
namespace {

namespace fs = std::filesystem;

struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

X509Ptr load_certificate(const fs::path& path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(path.c_str(), "rb"), &BIO_free);
  if (!bio) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

PkeyPtr load_key(const fs::path& path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(path.c_str(), "rb"), &BIO_free);
  if (!bio) return nullptr;
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

unsigned mode_of(const fs::path& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return 0;
  return info.st_mode & 07777;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// X509_verify_cert against `ca` only; returns the verification error (X509_V_OK when it verifies).
int verify_against(X509* ca, X509* leaf, int purpose) {
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), &X509_STORE_free);
  X509_STORE_add_cert(store.get(), ca);
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> context(X509_STORE_CTX_new(), &X509_STORE_CTX_free);
  X509_STORE_CTX_init(context.get(), store.get(), leaf, nullptr);
  X509_STORE_CTX_set_purpose(context.get(), purpose);
  const int ok = X509_verify_cert(context.get());
  const int error = X509_STORE_CTX_get_error(context.get());
  return ok == 1 ? X509_V_OK : (error == X509_V_OK ? -1 : error);
}

std::string subject_of(X509* certificate) {
  char buffer[512];
  X509_NAME_oneline(X509_get_subject_name(certificate), buffer, sizeof buffer);
  return buffer;
}

std::string issuer_of(X509* certificate) {
  char buffer[512];
  X509_NAME_oneline(X509_get_issuer_name(certificate), buffer, sizeof buffer);
  return buffer;
}

// Seconds between notBefore and notAfter: the validity the options asked for, read from the
// certificate itself (no clock involved).
long validity_seconds(X509* certificate) {
  int days = 0, seconds = 0;
  if (ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(certificate), X509_get0_notAfter(certificate)) != 1) return -1;
  return days * 86400L + seconds;
}

bool has_uri(X509* certificate, const std::string& uri) {
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(certificate, NID_subject_alt_name, nullptr, nullptr));
  bool found = false;
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_URI &&
        std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(name->d.uniformResourceIdentifier)),
                    static_cast<std::size_t>(ASN1_STRING_length(name->d.uniformResourceIdentifier))) == uri)
      found = true;
  }
  GENERAL_NAMES_free(names);
  return found;
}

class FederationPkiTest : public ::testing::Test {
 protected:
  test::TempDir temp_{"aegis_pki"};
  fs::path dir_ = temp_.path / "federation";
};

TEST_F(FederationPkiTest, WritesEveryFileWithOwnerOnlyKeysWhateverTheUmask) {
  PkiOptions options;
  options.participants = {"hospital-a", "clinic_b.2"};
  // The most permissive umask: the modes must come from the code, not from the environment.
  const mode_t previous = ::umask(0);
  FederationPki pki;
  try {
    pki = create_federation_pki(dir_, options);
  } catch (...) {
    ::umask(previous);
    throw;
  }
  ::umask(previous);

  EXPECT_EQ(pki.dir, dir_);
  EXPECT_EQ(pki.ca_certificate(), dir_ / "ca.pem");
  EXPECT_EQ(pki.aggregator_certificate(), dir_ / "aggregator.pem");
  EXPECT_EQ(pki.participant_certificate("hospital-a"), dir_ / "participants" / "hospital-a.pem");
  EXPECT_EQ(mode_of(dir_), 0700u);
  EXPECT_EQ(mode_of(dir_ / "participants"), 0700u);
  for (const auto& key : {pki.ca_key(), pki.aggregator_key(), pki.participant_key("hospital-a"), pki.participant_key("clinic_b.2")}) {
    ASSERT_TRUE(fs::is_regular_file(key)) << key;
    EXPECT_EQ(mode_of(key), 0600u) << key;
    EXPECT_NE(read_text(key).find("-----BEGIN PRIVATE KEY-----"), std::string::npos) << key;
  }
  for (const auto& certificate : {pki.ca_certificate(), pki.aggregator_certificate(), pki.participant_certificate("hospital-a"),
                                  pki.participant_certificate("clinic_b.2")}) {
    ASSERT_TRUE(fs::is_regular_file(certificate)) << certificate;
    EXPECT_EQ(mode_of(certificate), 0644u) << certificate;
  }
}

TEST_F(FederationPkiTest, CertificatesCarryTheRolesTheyAreFor) {
  PkiOptions options;
  options.participants = {"hospital-a"};
  options.aggregator_names = {"aggregator.example.org", "127.0.0.1", "::1"};
  options.days = 30;
  const FederationPki pki = create_federation_pki(dir_, options);

  X509Ptr ca = load_certificate(pki.ca_certificate());
  X509Ptr aggregator = load_certificate(pki.aggregator_certificate());
  X509Ptr participant = load_certificate(pki.participant_certificate("hospital-a"));
  ASSERT_TRUE(ca && aggregator && participant);

  // The CA: self-signed, a CA, ECDSA P-256 with SHA-256.
  EXPECT_EQ(X509_check_issued(ca.get(), ca.get()), X509_V_OK);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_NE(subject_of(ca.get()).find("CN=Aegis federation CA "), std::string::npos) << subject_of(ca.get());
  EXPECT_EQ(X509_get_signature_nid(ca.get()), NID_ecdsa_with_SHA256);
  EVP_PKEY* ca_public = X509_get0_pubkey(ca.get());
  EXPECT_EQ(EVP_PKEY_get_base_id(ca_public), EVP_PKEY_EC);
  EXPECT_EQ(EVP_PKEY_get_bits(ca_public), 256);
  PkeyPtr ca_key = load_key(pki.ca_key());
  ASSERT_TRUE(ca_key);
  EXPECT_EQ(X509_check_private_key(ca.get(), ca_key.get()), 1);

  // The aggregator: a server certificate for the names asked for, and no others.
  EXPECT_EQ(X509_check_ca(aggregator.get()), 0);
  EXPECT_EQ(issuer_of(aggregator.get()), subject_of(ca.get()));
  EXPECT_TRUE(X509_get_extended_key_usage(aggregator.get()) & XKU_SSL_SERVER);
  EXPECT_FALSE(X509_get_extended_key_usage(aggregator.get()) & XKU_SSL_CLIENT);
  EXPECT_EQ(X509_check_host(aggregator.get(), "aggregator.example.org", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(aggregator.get(), "attacker.example.org", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ip_asc(aggregator.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(aggregator.get(), "::1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(aggregator.get(), "10.0.0.1", 0), 0);
  EXPECT_EQ(verify_against(ca.get(), aggregator.get(), X509_PURPOSE_SSL_SERVER), X509_V_OK);
  EXPECT_EQ(verify_against(ca.get(), aggregator.get(), X509_PURPOSE_SSL_CLIENT), X509_V_ERR_INVALID_PURPOSE);
  PkeyPtr aggregator_key = load_key(pki.aggregator_key());
  ASSERT_TRUE(aggregator_key);
  EXPECT_EQ(X509_check_private_key(aggregator.get(), aggregator_key.get()), 1);

  // The participant: a client certificate whose CN is its id.
  EXPECT_EQ(certificate_common_name(pki.participant_certificate("hospital-a")), "hospital-a");
  EXPECT_EQ(issuer_of(participant.get()), subject_of(ca.get()));
  EXPECT_TRUE(X509_get_extended_key_usage(participant.get()) & XKU_SSL_CLIENT);
  EXPECT_FALSE(X509_get_extended_key_usage(participant.get()) & XKU_SSL_SERVER);
  EXPECT_TRUE(has_uri(participant.get(), "urn:aegis:federation:participant:hospital-a"));
  EXPECT_EQ(X509_get_signature_nid(participant.get()), NID_ecdsa_with_SHA256);
  EXPECT_EQ(verify_against(ca.get(), participant.get(), X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  EXPECT_EQ(verify_against(ca.get(), participant.get(), X509_PURPOSE_SSL_SERVER), X509_V_ERR_INVALID_PURPOSE);
  PkeyPtr participant_key = load_key(pki.participant_key("hospital-a"));
  ASSERT_TRUE(participant_key);
  EXPECT_EQ(X509_check_private_key(participant.get(), participant_key.get()), 1);
  EXPECT_EQ(X509_check_private_key(participant.get(), aggregator_key.get()), 0);

  // 30 days, plus the five minutes notBefore is set back.
  EXPECT_EQ(validity_seconds(participant.get()), 30 * 86400L + 300);
  EXPECT_EQ(validity_seconds(ca.get()), 30 * 86400L + 300);
  // Random serials: two certificates never share one.
  EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(aggregator.get()), X509_get0_serialNumber(participant.get())), 0);
}

TEST_F(FederationPkiTest, AnotherFederationsCertificatesDoNotVerify) {
  PkiOptions options;
  options.participants = {"hospital-a"};
  const FederationPki ours = create_federation_pki(dir_, options);
  const FederationPki theirs = create_federation_pki(temp_.path / "other", options);
  X509Ptr our_ca = load_certificate(ours.ca_certificate());
  X509Ptr their_participant = load_certificate(theirs.participant_certificate("hospital-a"));
  ASSERT_TRUE(our_ca && their_participant);
  // Same participant id, other CA: the id alone proves nothing.
  EXPECT_EQ(certificate_common_name(theirs.participant_certificate("hospital-a")), "hospital-a");
  EXPECT_EQ(verify_against(our_ca.get(), their_participant.get(), X509_PURPOSE_SSL_CLIENT),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}

TEST_F(FederationPkiTest, RefusesToOverwriteAnExistingCaUnlessAsked) {
  PkiOptions options;
  options.participants = {"old-member"};
  const FederationPki pki = create_federation_pki(dir_, options);
  const std::string first_ca = read_text(pki.ca_certificate());

  options.participants = {"new-member"};
  try {
    create_federation_pki(dir_, options);
    FAIL() << "a second init over an existing CA must be refused";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("--overwrite"), std::string::npos) << e.hint();
  }
  EXPECT_EQ(read_text(pki.ca_certificate()), first_ca);
  EXPECT_FALSE(fs::exists(pki.participant_certificate("new-member")));

  options.overwrite = true;
  create_federation_pki(dir_, options);
  EXPECT_NE(read_text(pki.ca_certificate()), first_ca);
  EXPECT_EQ(mode_of(pki.ca_key()), 0600u);
  EXPECT_TRUE(fs::exists(pki.participant_certificate("new-member")));
  // The old CA's participants would no longer verify: their files are gone, not left to mislead.
  EXPECT_FALSE(fs::exists(pki.participant_certificate("old-member")));
  EXPECT_FALSE(fs::exists(pki.participant_key("old-member")));
}

TEST_F(FederationPkiTest, RefusesParticipantIdsThatAreNotSafeNames) {
  const std::string too_long(65, 'a');
  for (const std::string& bad : {std::string(), std::string("a/b"), std::string("../escape"), too_long, std::string("h\xc3\xa9llo"),
                                std::string("with space"), std::string("semi;colon"), std::string("nul\0x", 5)}) {
    PkiOptions options;
    options.participants = {"fine", bad};
    EXPECT_THROW(create_federation_pki(dir_, options), core::Error) << bad;
    EXPECT_FALSE(is_valid_participant_id(bad)) << bad;
  }
  // Nothing was written for any refused call.
  EXPECT_FALSE(fs::exists(dir_));
  EXPECT_TRUE(is_valid_participant_id(std::string(64, 'z')));
  EXPECT_TRUE(is_valid_participant_id("A-z_0.9"));
  EXPECT_THROW(FederationPki{dir_}.participant_certificate("../../etc/passwd"), core::Error);

  PkiOptions twice;
  twice.participants = {"same", "same"};
  EXPECT_THROW(create_federation_pki(dir_, twice), core::Error);
  EXPECT_FALSE(fs::exists(dir_));
}

TEST_F(FederationPkiTest, RefusesAggregatorNamesThatCouldInjectOtherNames) {
  PkiOptions options;
  options.aggregator_names = {"good.example", "evil,IP:10.0.0.1"};
  EXPECT_THROW(create_federation_pki(dir_, options), core::Error);
  options.aggregator_names = {};
  EXPECT_THROW(create_federation_pki(dir_, options), core::Error);
  options.aggregator_names = {"localhost"};
  options.days = 0;
  EXPECT_THROW(create_federation_pki(dir_, options), core::Error);
  EXPECT_FALSE(fs::exists(dir_));
}

TEST_F(FederationPkiTest, IssuesOneMoreParticipantFromTheExistingCa) {
  const FederationPki pki = create_federation_pki(dir_, {});
  issue_participant_certificate(pki, "late-joiner", 10);
  X509Ptr ca = load_certificate(pki.ca_certificate());
  X509Ptr participant = load_certificate(pki.participant_certificate("late-joiner"));
  ASSERT_TRUE(ca && participant);
  EXPECT_EQ(verify_against(ca.get(), participant.get(), X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  EXPECT_EQ(certificate_common_name(pki.participant_certificate("late-joiner")), "late-joiner");
  EXPECT_EQ(mode_of(pki.participant_key("late-joiner")), 0600u);
  EXPECT_EQ(validity_seconds(participant.get()), 10 * 86400L + 300);

  // Once only: a second certificate for the same id is refused.
  EXPECT_THROW(issue_participant_certificate(pki, "late-joiner"), core::Error);
  EXPECT_THROW(issue_participant_certificate(pki, "bad/id"), core::Error);

  // Without the CA's key there is nothing to sign with; the error says which file is missing.
  fs::rename(pki.ca_key(), dir_ / "ca.key.elsewhere");
  try {
    issue_participant_certificate(pki, "another");
    FAIL() << "issuing without ca.key must fail";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("ca.key"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(pki.participant_certificate("another")));
}

TEST_F(FederationPkiTest, NeverWritesAKeyThroughAPlantedLink) {
  const FederationPki pki = create_federation_pki(dir_, {});
  const fs::path target = temp_.path / "attacker-reads-this";
  fs::create_symlink(target, pki.participant_key("victim"));
  EXPECT_THROW(issue_participant_certificate(pki, "victim"), core::Error);
  EXPECT_FALSE(fs::exists(target));
}

TEST_F(FederationPkiTest, CommonNameOfSomethingThatIsNotACertificateIsAnError) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / "junk.pem") << "not a certificate\n";
  EXPECT_THROW(certificate_common_name(dir_ / "junk.pem"), core::Error);
  EXPECT_THROW(certificate_common_name(dir_ / "missing.pem"), core::Error);
}

}  // namespace
}  // namespace aegis::federated
