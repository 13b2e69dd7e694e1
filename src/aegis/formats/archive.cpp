// Opens the wrappers that models travel in (7z, tar, gzip, bzip2, xz, lzma, zlib) through libarchive
// and zlib, from memory, never writing to disk and never decompressing past the limits.
#include "aegis/formats/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>

#include "aegis/core/error.h"

namespace aegis::formats {
namespace {

constexpr std::size_t kChunk = 64 * 1024;
// Compression of constant data legitimately exceeds any sane ratio on small inputs; the ratio
// only marks a bomb once the output is large enough to matter.
constexpr std::uint64_t kRatioFloorBytes = 1ull << 20;

struct ArchiveCloser {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchiveHandle = std::unique_ptr<struct archive, ArchiveCloser>;

std::string archive_message(struct archive* a) {
  const char* text = archive_error_string(a);
  return text ? text : "unknown libarchive error";
}

// The most output the input may produce before the ratio limit calls it a bomb.
std::uint64_t ratio_cap(std::uint64_t input_size, const ArchiveLimits& limits) {
  if (limits.max_ratio == 0) return kRatioFloorBytes;
  if (input_size > std::numeric_limits<std::uint64_t>::max() / limits.max_ratio) return std::numeric_limits<std::uint64_t>::max();
  return std::max(input_size * limits.max_ratio, kRatioFloorBytes);
}

// Which limit a given output size runs into first, and how many bytes that limit allows.
struct OutputBudget {
  std::uint64_t bytes;
  std::string limit;
};

OutputBudget budget_for(std::uint64_t entry_limit, std::uint64_t total_left, std::uint64_t ratio_left) {
  OutputBudget budget{entry_limit, "max_entry_size"};
  if (total_left < budget.bytes) budget = {total_left, "max_total_size"};
  if (ratio_left < budget.bytes) budget = {ratio_left, "max_ratio"};
  return budget;
}

// Reads the current entry's data into `out`, at most budget.bytes; returns the limit hit, or an
// empty string when the data ended first. Read errors come back through `error`.
std::string read_entry_data(struct archive* a, const OutputBudget& budget, std::vector<std::uint8_t>& out,
                            std::string& error) {
  std::array<std::uint8_t, kChunk> chunk;
  while (true) {
    const la_ssize_t got = archive_read_data(a, chunk.data(), chunk.size());
    if (got == 0) return {};
    if (got < 0) {
      error = archive_message(a);
      return {};
    }
    const std::uint64_t room = budget.bytes - out.size();
    const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(room, static_cast<std::uint64_t>(got)));
    out.insert(out.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(take));
    if (static_cast<std::uint64_t>(got) > room) return budget.limit;
  }
}

// Only the decompressors libarchive runs in-process: archive_read_support_filter_all would also
// register lrzip, lzop and grzip, which spawn external programs on hostile input. A filter that
// answers ARCHIVE_WARN has fallen back to an external program, so the handle is refused.
bool enable_in_process_filters(struct archive* a) {
  using Enable = int (*)(struct archive*);
  constexpr std::array<Enable, 8> filters = {
      archive_read_support_filter_gzip, archive_read_support_filter_bzip2, archive_read_support_filter_xz,
      archive_read_support_filter_lzma, archive_read_support_filter_lzip,  archive_read_support_filter_zstd,
      archive_read_support_filter_lz4,  archive_read_support_filter_compress,
  };
  for (Enable enable : filters) {
    if (enable(a) != ARCHIVE_OK) return false;
  }
  return true;
}

bool looks_like_zlib_stream(std::span<const std::uint8_t> data) {
  return data.size() >= 2 && (data[0] & 0x0F) == 8 && (data[0] >> 4) <= 7 && ((data[0] << 8) | data[1]) % 31 == 0;
}

// joblib's zlib compressor writes plain zlib streams (not raw deflate, not gzip), and its reader
// carries on into a following stream when one ends, so we do too.
std::string inflate_zlib(std::span<const std::uint8_t> data, const OutputBudget& budget, std::vector<std::uint8_t>& out) {
  z_stream stream{};
  if (inflateInit(&stream) != Z_OK) return "zlib could not start";
  std::array<std::uint8_t, kChunk> chunk;
  std::size_t consumed = 0;
  std::string reason;
  while (true) {
    const std::size_t in_chunk = std::min<std::size_t>(data.size() - consumed, 1u << 30);
    stream.next_in = const_cast<Bytef*>(data.data() + consumed);
    stream.avail_in = static_cast<uInt>(in_chunk);
    stream.next_out = chunk.data();
    stream.avail_out = static_cast<uInt>(chunk.size());
    const int status = inflate(&stream, Z_NO_FLUSH);
    consumed += in_chunk - stream.avail_in;
    const std::size_t got = chunk.size() - stream.avail_out;
    const std::uint64_t room = budget.bytes - out.size();
    out.insert(out.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(room, got)));
    if (got > room) {
      reason = "limit " + budget.limit + " reached";
      break;
    }
    if (status == Z_STREAM_END) {
      if (consumed == data.size()) break;
      if (!looks_like_zlib_stream(data.subspan(consumed))) {
        reason = "damaged stream: " + std::to_string(data.size() - consumed) + " bytes of trailing data after the zlib stream";
        break;
      }
      inflateReset(&stream);
      continue;
    }
    if (status == Z_BUF_ERROR && consumed == data.size()) {
      reason = "damaged stream: the zlib stream is truncated";
      break;
    }
    if (status != Z_OK && status != Z_BUF_ERROR) {
      reason = std::string("damaged stream: ") + (stream.msg ? stream.msg : "zlib error");
      break;
    }
  }
  inflateEnd(&stream);
  return reason;
}

std::string describe_skipped(struct archive_entry* entry) {
  const char* name = archive_entry_pathname(entry);
  std::string text = name ? name : "(unnamed)";
  if (const char* target = archive_entry_symlink(entry)) return "skipped symlink '" + text + "' -> '" + target + "'";
  if (const char* target = archive_entry_hardlink(entry)) return "skipped hard link '" + text + "' -> '" + target + "'";
  switch (archive_entry_filetype(entry)) {
    case AE_IFCHR: return "skipped character device '" + text + "'";
    case AE_IFBLK: return "skipped block device '" + text + "'";
    case AE_IFIFO: return "skipped FIFO '" + text + "'";
    case AE_IFSOCK: return "skipped socket '" + text + "'";
    default: return "skipped non-regular entry '" + text + "'";
  }
}

}  // namespace

std::vector<std::string> for_each_archive_entry(std::span<const std::uint8_t> data, const ArchiveLimits& limits,
                                                const std::function<void(const ArchiveEntry&)>& visit) {
  ArchiveHandle handle(archive_read_new());
  struct archive* a = handle.get();
  if (!a) throw core::FormatError("libarchive could not start", 0);
  if (!enable_in_process_filters(a)) throw core::FormatError("libarchive lacks an in-process decompressor", 0);
  archive_read_support_format_all(a);
  if (archive_read_open_memory(a, data.data(), data.size()) != ARCHIVE_OK) {
    throw core::FormatError("not a readable archive: " + archive_message(a), 0);
  }

  std::vector<std::string> problems;
  const std::uint64_t ratio_limit = ratio_cap(data.size(), limits);
  std::uint64_t total = 0;
  std::size_t entries = 0;
  std::vector<std::uint8_t> content;
  while (true) {
    struct archive_entry* entry = nullptr;
    const int status = archive_read_next_header(a, &entry);
    if (status == ARCHIVE_EOF) break;
    if (status == ARCHIVE_WARN) problems.push_back("warning: " + archive_message(a));
    if (status < ARCHIVE_WARN) {
      if (entries == 0) throw core::FormatError("not a readable archive: " + archive_message(a), 0);
      problems.push_back("damaged archive after " + std::to_string(entries) + " entries: " + archive_message(a));
      break;
    }
    if (++entries > limits.max_entries) {
      problems.push_back("limit max_entries reached: more than " + std::to_string(limits.max_entries) + " entries; the rest were not read");
      break;
    }
    const char* raw_name = archive_entry_pathname(entry);
    const std::string name = raw_name ? raw_name : "";
    // 7z writers that record only Windows attributes (py7zr, 7-Zip on Windows) leave the Unix file
    // type empty: such an entry without a link target is a plain file.
    const auto type = archive_entry_filetype(entry);
    const bool plain_file = type == AE_IFREG || (type == 0 && archive_entry_symlink(entry) == nullptr);
    if (!plain_file || archive_entry_hardlink(entry) != nullptr) {
      if (archive_entry_filetype(entry) != AE_IFDIR) problems.push_back(describe_skipped(entry));
      continue;
    }
    if (archive_entry_is_encrypted(entry)) {
      problems.push_back("skipped encrypted entry '" + name + "'");
      continue;
    }
    const OutputBudget budget = budget_for(limits.max_entry_size, limits.max_total_size - total,
                                           ratio_limit > total ? ratio_limit - total : 0);
    content.clear();
    std::string error;
    const std::string limit = read_entry_data(a, budget, content, error);
    total += content.size();
    ArchiveEntry visited{name, content, !limit.empty() || !error.empty(), limit.empty() && !error.empty() ? "damaged" : limit};
    visit(visited);
    if (!error.empty()) {
      problems.push_back("damaged entry '" + name + "': " + error);
      break;
    }
    if (!limit.empty()) {
      problems.push_back("limit " + limit + " reached in entry '" + name + "'; it was cut short");
      if (limit != "max_entry_size") break;  // the archive-wide budgets are spent
    }
  }
  return problems;
}

std::string decompress_stream(std::span<const std::uint8_t> data, const ArchiveLimits& limits,
                              std::vector<std::uint8_t>& out) {
  out.clear();
  const OutputBudget budget = budget_for(limits.max_entry_size, limits.max_total_size, ratio_cap(data.size(), limits));
  if (looks_like_zlib_stream(data)) return inflate_zlib(data, budget, out);

  ArchiveHandle handle(archive_read_new());
  struct archive* a = handle.get();
  if (!a) return "libarchive could not start";
  if (!enable_in_process_filters(a)) return "libarchive lacks an in-process decompressor";
  archive_read_support_format_raw(a);
  if (archive_read_open_memory(a, data.data(), data.size()) != ARCHIVE_OK) return "not a compressed stream: " + archive_message(a);
  struct archive_entry* entry = nullptr;
  if (archive_read_next_header(a, &entry) < ARCHIVE_WARN) return "not a compressed stream: " + archive_message(a);
  if (archive_filter_count(a) < 2 || archive_filter_code(a, 0) == ARCHIVE_FILTER_NONE) {
    return "not a gzip, bzip2, xz, lzma or zlib stream";
  }
  std::string error;
  const std::string limit = read_entry_data(a, budget, out, error);
  if (!limit.empty()) return "limit " + limit + " reached";
  if (!error.empty()) return "damaged stream: " + error;
  return {};
}

}  // namespace aegis::formats
