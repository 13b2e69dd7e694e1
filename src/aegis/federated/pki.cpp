#include "aegis/federated/pki.h"

#include "aegis/federated/openssl_handle.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include "aegis/core/error.h"

namespace aegis::federated {
namespace {

namespace fs = std::filesystem;

using PkeyPtr = OpenSslPtr<EVP_PKEY, EVP_PKEY_free>;
using X509Ptr = OpenSslPtr<X509, X509_free>;
using NamePtr = OpenSslPtr<X509_NAME, X509_NAME_free>;
using BioPtr = OpenSslPtr<BIO, BIO_free_all>;
using BignumPtr = OpenSslPtr<BIGNUM, BN_free>;
using ExtensionPtr = OpenSslPtr<X509_EXTENSION, X509_EXTENSION_free>;

void free_general_names(GENERAL_NAMES* names) { GENERAL_NAMES_free(names); }
using GeneralNamesPtr = OpenSslPtr<GENERAL_NAMES, free_general_names>;

constexpr const char* kOrganization = "Aegis federation";

// OpenSSL's own words for the last failure, emptied from its thread-local queue.
std::string openssl_reason() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!out.empty()) out += "; ";
    out += buffer;
  }
  return out.empty() ? std::string("no detail from OpenSSL") : out;
}

[[noreturn]] void fail(const std::string& what) {
  throw core::Error(what + ": " + openssl_reason(), "this is an OpenSSL failure; check that OpenSSL 3 is installed intact");
}

void require(int ok, const char* what) {
  if (ok != 1) fail(what);
}

PkeyPtr generate_p256_key() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) fail("generating an ECDSA P-256 key failed");
  return key;
}

NamePtr make_name(const std::string& common_name) {
  NamePtr name(X509_NAME_new());
  if (!name) fail("allocating a certificate name failed");
  require(X509_NAME_add_entry_by_txt(name.get(), "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(kOrganization),
                                     -1, -1, 0),
          "setting the certificate organisation failed");
  require(X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0),
          "setting the certificate common name failed");
  return name;
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  require(RAND_bytes(raw.data(), static_cast<int>(raw.size())), "drawing random bytes failed");
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : raw) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

void add_extension(X509* certificate, X509V3_CTX* context, int nid, const char* value) {
  ExtensionPtr extension(X509V3_EXT_conf_nid(nullptr, context, nid, value));
  if (!extension) fail(std::string("building the certificate extension ") + OBJ_nid2sn(nid) + " failed");
  require(X509_add_ext(certificate, extension.get(), -1), "adding a certificate extension failed");
}

// What a certificate is for; decides its extensions.
enum class Role { ca, server, client };

struct AltName {
  int type;  // GEN_DNS, GEN_IPADD, GEN_URI
  std::string value;
};

bool is_ip_address(const std::string& text) {
  unsigned char buffer[sizeof(in6_addr)];
  return inet_pton(AF_INET, text.c_str(), buffer) == 1 || inet_pton(AF_INET6, text.c_str(), buffer) == 1;
}

// The SAN extension built from typed values, not from an OpenSSL config string, so that no name can
// smuggle in another entry with a comma.
void add_alt_names(X509* certificate, const std::vector<AltName>& names) {
  GeneralNamesPtr general_names(sk_GENERAL_NAME_new_null());
  if (!general_names) fail("allocating subject alternative names failed");
  for (const auto& alt : names) {
    GENERAL_NAME* name = GENERAL_NAME_new();
    if (!name) fail("allocating a subject alternative name failed");
    if (alt.type == GEN_IPADD) {
      ASN1_OCTET_STRING* address = a2i_IPADDRESS(alt.value.c_str());
      if (!address) {
        GENERAL_NAME_free(name);
        fail("encoding the IP address " + alt.value + " failed");
      }
      GENERAL_NAME_set0_value(name, GEN_IPADD, address);
    } else {
      ASN1_IA5STRING* text = ASN1_IA5STRING_new();
      if (!text || ASN1_STRING_set(text, alt.value.data(), static_cast<int>(alt.value.size())) != 1) {
        ASN1_IA5STRING_free(text);
        GENERAL_NAME_free(name);
        fail("encoding the name " + alt.value + " failed");
      }
      GENERAL_NAME_set0_value(name, alt.type, text);
    }
    if (sk_GENERAL_NAME_push(general_names.get(), name) <= 0) {
      GENERAL_NAME_free(name);
      fail("adding a subject alternative name failed");
    }
  }
  require(X509_add1_ext_i2d(certificate, NID_subject_alt_name, general_names.get(), 0, X509V3_ADD_DEFAULT),
          "adding the subject alternative names failed");
}

// Issues one certificate. For the CA, issuer == nullptr and issuer_key is its own key.
X509Ptr issue(Role role, const std::string& common_name, const std::vector<AltName>& alt_names, EVP_PKEY* subject_key,
              X509* issuer, EVP_PKEY* issuer_key, int days) {
  X509Ptr certificate(X509_new());
  if (!certificate) fail("allocating a certificate failed");
  require(X509_set_version(certificate.get(), X509_VERSION_3), "setting the certificate version failed");

  // A random 127-bit serial: unique without a serial file, positive as RFC 5280 wants.
  std::vector<unsigned char> serial(16);
  require(RAND_bytes(serial.data(), static_cast<int>(serial.size())), "drawing a certificate serial failed");
  serial[0] &= 0x7f;
  serial[0] |= 0x01;  // no leading zero byte, so the DER encoding keeps all 16 bytes
  BignumPtr serial_number(BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr));
  if (!serial_number || !BN_to_ASN1_INTEGER(serial_number.get(), X509_get_serialNumber(certificate.get())))
    fail("setting the certificate serial failed");

  // Five minutes back: a participant whose clock runs a little behind still accepts a fresh certificate.
  if (!X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -300) ||
      !X509_time_adj_ex(X509_getm_notAfter(certificate.get()), days, 0, nullptr))
    fail("setting the certificate validity failed");

  NamePtr subject = make_name(common_name);
  require(X509_set_subject_name(certificate.get(), subject.get()), "setting the certificate subject failed");
  require(X509_set_issuer_name(certificate.get(), issuer ? X509_get_subject_name(issuer) : subject.get()),
          "setting the certificate issuer failed");
  require(X509_set_pubkey(certificate.get(), subject_key), "setting the certificate key failed");

  X509V3_CTX context;
  X509V3_set_ctx(&context, issuer ? issuer : certificate.get(), certificate.get(), nullptr, nullptr, 0);
  switch (role) {
    case Role::ca:
      // pathlen 0: the federation CA signs leaves only, never another CA.
      add_extension(certificate.get(), &context, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
      add_extension(certificate.get(), &context, NID_key_usage, "critical,keyCertSign,cRLSign");
      break;
    case Role::server:
      add_extension(certificate.get(), &context, NID_basic_constraints, "critical,CA:FALSE");
      add_extension(certificate.get(), &context, NID_key_usage, "critical,digitalSignature");
      add_extension(certificate.get(), &context, NID_ext_key_usage, "serverAuth");
      break;
    case Role::client:
      add_extension(certificate.get(), &context, NID_basic_constraints, "critical,CA:FALSE");
      add_extension(certificate.get(), &context, NID_key_usage, "critical,digitalSignature");
      add_extension(certificate.get(), &context, NID_ext_key_usage, "clientAuth");
      break;
  }
  add_extension(certificate.get(), &context, NID_subject_key_identifier, "hash");
  add_extension(certificate.get(), &context, NID_authority_key_identifier, "keyid:always");
  if (!alt_names.empty()) add_alt_names(certificate.get(), alt_names);

  if (X509_sign(certificate.get(), issuer_key, EVP_sha256()) <= 0) fail("signing the certificate failed");
  return certificate;
}

std::string to_pem(X509* certificate) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), certificate) != 1) fail("encoding a certificate as PEM failed");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

std::string to_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail("encoding a private key as PEM failed");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const std::string& data, const fs::path& path) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string reason = errno_text();
      ::close(fd);
      throw core::Error("cannot write " + path.string() + ": " + reason, "check the free space and the folder's permissions");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw core::Error("cannot write " + path.string() + ": " + errno_text(), "check the free space and the folder's permissions");
}

// O_EXCL and O_NOFOLLOW: the key never lands in a file or behind a link that someone else made
// first; fchmod makes the mode exact whatever the umask.
void write_private_key(const fs::path& path, const std::string& pem) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    const bool exists = errno == EEXIST;
    throw core::Error("cannot create the private key " + path.string() + ": " + errno_text(),
                      exists ? "a file is already there; remove it if it is stale" : "check the folder's permissions");
  }
  if (::fchmod(fd, 0600) != 0) {
    const std::string reason = errno_text();
    ::close(fd);
    throw core::Error("cannot restrict " + path.string() + " to its owner: " + reason, "check the folder's permissions");
  }
  write_all(fd, pem, path);
}

void write_certificate(const fs::path& path, const std::string& pem) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0)
    throw core::Error("cannot create the certificate " + path.string() + ": " + errno_text(), "check the folder's permissions");
  if (::fchmod(fd, 0644) != 0) {
    const std::string reason = errno_text();
    ::close(fd);
    throw core::Error("cannot set the mode of " + path.string() + ": " + reason, "check the folder's permissions");
  }
  write_all(fd, pem, path);
}

void make_private_folder(const fs::path& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) throw core::Error("cannot create the folder " + path.string() + ": " + ec.message(), "check the parent folder's permissions");
  if (!fs::is_directory(path)) throw core::Error(path.string() + " is not a folder", "choose another federation folder");
  if (::chmod(path.c_str(), 0700) != 0)
    throw core::Error("cannot restrict " + path.string() + " to its owner: " + errno_text(), "check that you own the folder");
}

void remove_file(const fs::path& path) {
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) throw core::Error("cannot remove " + path.string() + ": " + ec.message(), "check the folder's permissions");
}

std::string read_text_file(const fs::path& path, const char* what) {
  BioPtr bio(BIO_new_file(path.c_str(), "rb"));
  if (!bio) {
    ERR_clear_error();
    throw core::Error(std::string("cannot open the ") + what + " " + path.string(),
                      "check the path; `aegis federated init` creates the federation's files");
  }
  std::string out;
  char buffer[4096];
  int n = 0;
  while ((n = BIO_read(bio.get(), buffer, sizeof buffer)) > 0) {
    out.append(buffer, static_cast<std::size_t>(n));
    if (out.size() > (1u << 20)) throw core::Error(path.string() + " is larger than 1 MiB, not a PEM " + what, "check the path");
  }
  return out;
}

X509Ptr read_certificate(const fs::path& path) {
  const std::string pem = read_text_file(path, "certificate");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr certificate(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!certificate)
    throw core::Error(path.string() + " holds no PEM certificate: " + openssl_reason(),
                      "point to the .pem file that `aegis federated init` wrote");
  return certificate;
}

PkeyPtr read_private_key(const fs::path& path) {
  const std::string pem = read_text_file(path, "private key");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key)
    throw core::Error(path.string() + " holds no unencrypted PEM private key: " + openssl_reason(),
                      "point to the .key file that `aegis federated init` wrote");
  return key;
}

void check_days(int days) {
  if (days < 1 || days > 36500)
    throw core::Error("certificate validity of " + std::to_string(days) + " days is out of range", "choose 1 to 36500 days");
}

void check_participant_id(std::string_view id) {
  if (!is_valid_participant_id(id))
    throw core::Error("invalid participant id '" + std::string(id.substr(0, 80)) + "'",
                      "use 1 to 64 characters among letters, digits, '.', '_' and '-'");
}

bool is_valid_dns_name(const std::string& name) {
  if (name.empty() || name.size() > 253 || name.front() == '.' || name.front() == '-') return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  return name.find("..") == std::string::npos;
}

std::vector<AltName> aggregator_alt_names(const std::vector<std::string>& names) {
  if (names.empty())
    throw core::Error("the aggregator needs at least one name", "give the DNS name or IP address participants connect to");
  std::vector<AltName> out;
  for (const auto& name : names) {
    if (is_ip_address(name)) out.push_back({GEN_IPADD, name});
    else if (is_valid_dns_name(name)) out.push_back({GEN_DNS, name});
    else
      throw core::Error("invalid aggregator name '" + name.substr(0, 80) + "'",
                        "give DNS names (letters, digits, '-', '.') or IP addresses");
  }
  return out;
}

std::vector<AltName> participant_alt_names(const std::string& id) {
  // A URI SAN too: name-constrained or SAN-only verifiers still see who the certificate is for.
  return {{GEN_URI, "urn:aegis:federation:participant:" + id}};
}

void issue_participant(const FederationPki& pki, const std::string& id, X509* ca, EVP_PKEY* ca_key, int days) {
  PkeyPtr key = generate_p256_key();
  X509Ptr certificate = issue(Role::client, id, participant_alt_names(id), key.get(), ca, ca_key, days);
  write_private_key(pki.participant_key(id), to_pem(key.get()));
  write_certificate(pki.participant_certificate(id), to_pem(certificate.get()));
}

}  // namespace

bool is_valid_participant_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

fs::path FederationPki::ca_certificate() const { return dir / "ca.pem"; }
fs::path FederationPki::ca_key() const { return dir / "ca.key"; }
fs::path FederationPki::aggregator_certificate() const { return dir / "aggregator.pem"; }
fs::path FederationPki::aggregator_key() const { return dir / "aggregator.key"; }

fs::path FederationPki::participant_certificate(std::string_view id) const {
  check_participant_id(id);
  return dir / "participants" / (std::string(id) + ".pem");
}

fs::path FederationPki::participant_key(std::string_view id) const {
  check_participant_id(id);
  return dir / "participants" / (std::string(id) + ".key");
}

FederationPki create_federation_pki(const fs::path& dir, const PkiOptions& options) {
  check_days(options.days);
  std::set<std::string> seen;
  for (const auto& id : options.participants) {
    check_participant_id(id);
    if (!seen.insert(id).second)
      throw core::Error("participant id '" + id + "' is given twice", "give each participant one unique id");
  }
  const std::vector<AltName> aggregator_names = aggregator_alt_names(options.aggregator_names);

  FederationPki pki{dir};
  const fs::path existing[] = {pki.ca_certificate(), pki.ca_key(), pki.aggregator_certificate(), pki.aggregator_key()};
  for (const auto& path : existing) {
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(path, ec))) continue;
    if (!options.overwrite)
      throw core::Error("a federation already exists in " + dir.string() + " (" + path.filename().string() + " is there)",
                        "keep it and issue certificates for new participants from its CA, or pass --overwrite to "
                        "replace it (every certificate the old CA issued stops working)");
  }

  // Everything in memory first: a failure here leaves the folder as it was.
  PkeyPtr ca_key = generate_p256_key();
  X509Ptr ca = issue(Role::ca, "Aegis federation CA " + random_hex(4), {}, ca_key.get(), nullptr, ca_key.get(), options.days);
  PkeyPtr aggregator_key = generate_p256_key();
  X509Ptr aggregator = issue(Role::server, "aegis federation aggregator", aggregator_names, aggregator_key.get(), ca.get(),
                             ca_key.get(), options.days);

  make_private_folder(dir);
  make_private_folder(dir / "participants");
  if (options.overwrite) {
    for (const auto& path : existing) remove_file(path);
    // The old CA's participant certificates would no longer verify: leaving them would only mislead.
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir / "participants", ec)) {
      const auto extension = entry.path().extension();
      if (extension == ".pem" || extension == ".key") remove_file(entry.path());
    }
  }
  write_private_key(pki.ca_key(), to_pem(ca_key.get()));
  write_certificate(pki.ca_certificate(), to_pem(ca.get()));
  write_private_key(pki.aggregator_key(), to_pem(aggregator_key.get()));
  write_certificate(pki.aggregator_certificate(), to_pem(aggregator.get()));
  for (const auto& id : options.participants) issue_participant(pki, id, ca.get(), ca_key.get(), options.days);
  return pki;
}

void issue_participant_certificate(const FederationPki& pki, const std::string& participant, int days) {
  check_days(days);
  check_participant_id(participant);
  X509Ptr ca = read_certificate(pki.ca_certificate());
  std::error_code ec;
  if (!fs::exists(pki.ca_key(), ec))
    throw core::Error("the CA's private key " + pki.ca_key().string() + " is missing",
                      "issue participant certificates where the federation was created (the folder that holds ca.key)");
  PkeyPtr ca_key = read_private_key(pki.ca_key());
  if (X509_check_private_key(ca.get(), ca_key.get()) != 1) {
    ERR_clear_error();
    throw core::Error(pki.ca_key().string() + " is not the key of " + pki.ca_certificate().string(),
                      "restore the ca.key that was created with this ca.pem");
  }
  for (const auto& path : {pki.participant_certificate(participant), pki.participant_key(participant)})
    if (fs::exists(fs::symlink_status(path, ec)))
      throw core::Error("participant '" + participant + "' already has " + path.string(),
                        "choose another id, or remove its .pem and .key to issue a new certificate");
  make_private_folder(pki.dir / "participants");
  issue_participant(pki, participant, ca.get(), ca_key.get(), days);
}

std::string certificate_common_name(const fs::path& pem) {
  X509Ptr certificate = read_certificate(pem);
  X509_NAME* subject = X509_get_subject_name(certificate.get());
  const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) throw core::Error(pem.string() + " has no common name in its subject", "use a certificate from the federation's CA");
  unsigned char* utf8 = nullptr;
  const int size = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
  if (size < 0) fail("reading the common name of " + pem.string() + " failed");
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(size));
  OPENSSL_free(utf8);
  return out;
}

}  // namespace aegis::federated
