// The federation's own certificate authority: one CA (ECDSA P-256, SHA-256) that issues the
// aggregator's server certificate and one client certificate per participant, so that both ends of
// every federated connection authenticate each other (mutual TLS) without any public CA.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::federated {

// Where a federation's files live. Layout:
//   dir/ca.pem, dir/ca.key                      the CA (keep ca.key on the aggregator's host only)
//   dir/aggregator.pem, dir/aggregator.key      serverAuth, SANs = PkiOptions::aggregator_names
//   dir/participants/<id>.pem, <id>.key         clientAuth, CN = id
struct FederationPki {
  std::filesystem::path dir;

  std::filesystem::path ca_certificate() const;  // dir/ca.pem
  std::filesystem::path ca_key() const;          // dir/ca.key
  std::filesystem::path aggregator_certificate() const;
  std::filesystem::path aggregator_key() const;
  // Throw core::Error for an id that is_valid_participant_id refuses: ids become file names.
  std::filesystem::path participant_certificate(std::string_view id) const;
  std::filesystem::path participant_key(std::string_view id) const;
};

struct PkiOptions {
  std::vector<std::string> participants;
  // DNS names or IP addresses (v4 or v6) the participants use to reach the aggregator; the client
  // checks the one it dialled against these SANs.
  std::vector<std::string> aggregator_names = {"localhost", "127.0.0.1"};
  int days = 365;  // validity of every certificate issued, 1..36500
  bool overwrite = false;
};

// [A-Za-z0-9._-]{1,64}: safe as a file name and as a certificate common name.
bool is_valid_participant_id(std::string_view id);

// Creates the CA, the aggregator's certificate and one certificate per participant. Private keys
// are written 0600 (created with O_EXCL, so never through a pre-planted file or link), the folders
// 0700. Throws core::Error when dir already holds a CA (unless options.overwrite, which also
// removes the old participants' certificates and keys), for an invalid or repeated participant id,
// an invalid aggregator name, or when a file cannot be written. Nothing is written before every
// option has been checked.
FederationPki create_federation_pki(const std::filesystem::path& dir, const PkiOptions& options);

// Issues a certificate for one more participant of an existing federation; needs dir/ca.key.
// Refuses an id that already has a certificate (remove its files to reissue).
void issue_participant_certificate(const FederationPki& pki, const std::string& participant, int days = 365);

// The common name (for participants: the participant id) of the first certificate in a PEM file.
std::string certificate_common_name(const std::filesystem::path& pem);

}  // namespace aegis::federated
