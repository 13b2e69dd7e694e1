// Errors that carry what failed and what the user can do about it.
#pragma once

#include <stdexcept>
#include <cstdint>
#include <string>

namespace aegis::core {

// A usage or I/O error: the CLI prints what() and hint() and exits with status 2.
class Error : public std::runtime_error {
 public:
  Error(const std::string& what, std::string hint = {}) : std::runtime_error(what), hint_(std::move(hint)) {}
  const std::string& hint() const { return hint_; }

 private:
  std::string hint_;
};

// Hostile or damaged input that a parser could not read; the scanner turns it into a finding.
class FormatError : public std::runtime_error {
 public:
  FormatError(const std::string& what, std::uint64_t offset = 0) : std::runtime_error(what), offset_(offset) {}
  std::uint64_t offset() const { return offset_; }

 private:
  std::uint64_t offset_;
};

}  // namespace aegis::core
