// Read-only memory mapping of a file, so that parsers see bytes without copying them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace aegis::core {

class MappedFile {
 public:
  // Throws core::Error when the file cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&&) = delete;

  std::span<const std::uint8_t> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace aegis::core
