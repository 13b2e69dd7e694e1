// Reads zips the way PyTorch's loader (miniz) does, and notes every place where a stricter reader
// (Python's zipfile) or a different reader would see something else.
#include "aegis/formats/zip.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>

#include "aegis/core/error.h"

namespace aegis::formats {
namespace {

constexpr std::uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr std::uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr std::uint32_t kEndOfCentralDirSignature = 0x06054b50;
constexpr std::uint32_t kZip64EndOfCentralDirSignature = 0x06064b50;
constexpr std::uint32_t kZip64LocatorSignature = 0x07064b50;

constexpr std::size_t kLocalHeaderSize = 30;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kEndOfCentralDirSize = 22;
constexpr std::size_t kZip64EndOfCentralDirSize = 56;
constexpr std::size_t kZip64LocatorSize = 20;
constexpr std::size_t kMaxCommentLength = 0xFFFF;

constexpr std::uint16_t kFlagEncrypted = 0x0001;
constexpr std::uint16_t kFlagDataDescriptor = 0x0008;
constexpr std::uint16_t kFlagStrongEncryption = 0x0040;
constexpr std::uint16_t kZip64ExtraId = 0x0001;

constexpr std::uint32_t kU32Max = 0xFFFFFFFFu;

// A deflate stream can reach ~1032:1 legitimately on constant data; the ratio is a bomb signal only
// once the output is big enough to hurt, so small members of zeros are not refused.
constexpr std::uint64_t kRatioFloorBytes = 1ull << 20;

// Caps the anomaly list so that a hostile directory with a million odd entries stays bounded.
constexpr std::size_t kMaxAnomalies = 10000;

std::uint16_t le16(std::span<const std::uint8_t> d, std::size_t at) {
  return static_cast<std::uint16_t>(d[at] | (d[at + 1] << 8));
}
std::uint32_t le32(std::span<const std::uint8_t> d, std::size_t at) {
  return static_cast<std::uint32_t>(d[at]) | (static_cast<std::uint32_t>(d[at + 1]) << 8) |
         (static_cast<std::uint32_t>(d[at + 2]) << 16) | (static_cast<std::uint32_t>(d[at + 3]) << 24);
}
std::uint64_t le64(std::span<const std::uint8_t> d, std::size_t at) {
  return static_cast<std::uint64_t>(le32(d, at)) | (static_cast<std::uint64_t>(le32(d, at + 4)) << 32);
}

// True when [offset, offset + length) lies inside a buffer of `size` bytes, without overflow.
bool fits(std::uint64_t offset, std::uint64_t length, std::uint64_t size) {
  return offset <= size && length <= size - offset;
}

std::string hex16(std::uint16_t value) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%04x", value);
  return text;
}

// Names quoted inside anomaly details are cut short: a hostile archive can repeat a 64 KiB name
// in thousands of anomalies.
std::string shorten(const std::string& text) {
  constexpr std::size_t kMaxQuoted = 200;
  return text.size() <= kMaxQuoted ? text : text.substr(0, kMaxQuoted) + "...";
}

bool has_signature(std::span<const std::uint8_t> d, std::uint64_t at, std::uint32_t signature) {
  return fits(at, 4, d.size()) && le32(d, static_cast<std::size_t>(at)) == signature;
}

// The limit a member's output may reach before it counts as a bomb.
std::uint64_t inflation_cap(std::uint64_t compressed_size, const ZipLimits& limits) {
  std::uint64_t by_ratio = std::numeric_limits<std::uint64_t>::max();
  if (limits.max_ratio != 0 && compressed_size <= std::numeric_limits<std::uint64_t>::max() / limits.max_ratio) {
    by_ratio = compressed_size * limits.max_ratio;
  }
  return std::min(limits.max_inflated_size, std::max(by_ratio, kRatioFloorBytes));
}

struct EndOfCentralDirectory {
  std::uint64_t position = 0;  // of the EOCD record
  std::uint64_t entries = 0;
  std::uint64_t cd_size = 0;
  std::uint64_t cd_offset = 0;
  std::uint16_t comment_length = 0;
  bool zip64 = false;
  std::uint64_t zip64_record_position = 0;
};

// miniz scans back from the end and takes the last signature with room for a whole record after it.
std::optional<std::uint64_t> find_last_eocd(std::span<const std::uint8_t> d) {
  if (d.size() < kEndOfCentralDirSize) return std::nullopt;
  const std::uint64_t last = d.size() - kEndOfCentralDirSize;
  const std::uint64_t lowest = last > kMaxCommentLength ? last - kMaxCommentLength : 0;
  for (std::uint64_t at = last + 1; at-- > lowest;) {
    if (le32(d, static_cast<std::size_t>(at)) == kEndOfCentralDirSignature) return at;
  }
  return std::nullopt;
}

// Reads the zip64 locator just before the EOCD and the zip64 record it points to.
void read_zip64_end(std::span<const std::uint8_t> d, EndOfCentralDirectory& end, ZipArchive& archive) {
  if (end.position < kZip64LocatorSize) return;
  const std::uint64_t locator = end.position - kZip64LocatorSize;
  if (!has_signature(d, locator, kZip64LocatorSignature)) return;
  std::uint64_t record = le64(d, static_cast<std::size_t>(locator + 8));
  if (!has_signature(d, record, kZip64EndOfCentralDirSignature) || !fits(record, kZip64EndOfCentralDirSize, d.size())) {
    // Python's zipfile looks right before the locator when the stated offset is off (a prefix was added).
    const std::uint64_t beside = locator >= kZip64EndOfCentralDirSize ? locator - kZip64EndOfCentralDirSize : 0;
    if (locator >= kZip64EndOfCentralDirSize && has_signature(d, beside, kZip64EndOfCentralDirSignature)) {
      record = beside;
    } else {
      archive.anomalies.push_back({"out-of-bounds", "", locator, "zip64 locator points at no zip64 end record"});
      return;
    }
  }
  const auto at = static_cast<std::size_t>(record);
  end.zip64 = true;
  end.zip64_record_position = record;
  end.entries = le64(d, at + 32);
  end.cd_size = le64(d, at + 40);
  end.cd_offset = le64(d, at + 48);
}

struct Zip64Fields {
  std::uint64_t uncompressed_size;
  std::uint64_t compressed_size;
  std::uint64_t local_header_offset;
};

// Replaces the 32-bit fields that are saturated with the values of the zip64 extra field; only
// the saturated ones are present there, in this fixed order.
void apply_zip64_extra(std::span<const std::uint8_t> extra, Zip64Fields& fields, bool local_header) {
  std::size_t pos = 0;
  while (pos + 4 <= extra.size()) {
    const std::uint16_t id = le16(extra, pos);
    const std::uint16_t length = le16(extra, pos + 2);
    pos += 4;
    if (length > extra.size() - pos) return;
    if (id == kZip64ExtraId) {
      auto field = extra.subspan(pos, length);
      std::size_t at = 0;
      auto take = [&](std::uint64_t& value) {
        if (at + 8 <= field.size()) value = le64(field, at);
        at += 8;
      };
      // A local header's zip64 field carries both sizes whenever it is there (APPNOTE 4.5.3).
      const bool both_sizes = local_header && field.size() >= 16;
      if (fields.uncompressed_size == kU32Max || both_sizes) take(fields.uncompressed_size);
      if (fields.compressed_size == kU32Max || both_sizes) take(fields.compressed_size);
      if (!local_header && fields.local_header_offset == kU32Max) take(fields.local_header_offset);
      return;
    }
    pos += length;
  }
}

bool is_absolute_or_parent(const std::string& name) {
  if (name.empty()) return false;
  if (name[0] == '/' || name[0] == '\\') return true;
  if (name.size() >= 2 && name[1] == ':' && std::isalpha(static_cast<unsigned char>(name[0]))) return true;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t stop = name.find_first_of("/\\", start);
    if (stop == std::string::npos) stop = name.size();
    if (name.compare(start, stop - start, "..") == 0 && stop - start == 2) return true;
    start = stop + 1;
  }
  return false;
}

class AnomalyLog {
 public:
  explicit AnomalyLog(std::vector<ZipAnomaly>& anomalies) : anomalies_(anomalies) {}
  void add(std::string kind, std::string member, std::uint64_t offset, std::string detail) {
    if (anomalies_.size() >= kMaxAnomalies) {
      if (!capped_) anomalies_.push_back({"out-of-bounds", "", offset, "too many anomalies; the rest were not recorded"});
      capped_ = true;
      return;
    }
    anomalies_.push_back({std::move(kind), std::move(member), offset, std::move(detail)});
  }

 private:
  std::vector<ZipAnomaly>& anomalies_;
  bool capped_ = false;
};

// Compares the local header of one entry with its central record and places its data.
// `name_budget` bounds the local-name bytes copied in all: many central entries can point at one
// local header with a 64 KiB name, and legitimate archives never copy more than the file holds.
void read_local_header(std::span<const std::uint8_t> d, ZipEntry& entry, AnomalyLog& log, std::uint64_t& name_budget) {
  const std::uint64_t at = entry.local_header_offset;
  if (!fits(at, kLocalHeaderSize, d.size())) {
    log.add("out-of-bounds", entry.name, at, "local header lies outside the file");
    entry.readable = false;
    return;
  }
  const auto pos = static_cast<std::size_t>(at);
  if (le32(d, pos) != kLocalHeaderSignature) {
    log.add("bad-local-header", entry.name, at, "no local header signature at the offset the central directory gives");
    entry.readable = false;
    return;
  }
  entry.local_flags = le16(d, pos + 6);
  const std::uint16_t local_method = le16(d, pos + 8);
  const std::uint32_t local_crc = le32(d, pos + 14);
  Zip64Fields local{le32(d, pos + 22), le32(d, pos + 18), 0};
  const std::uint16_t name_length = le16(d, pos + 26);
  const std::uint16_t extra_length = le16(d, pos + 28);
  const std::uint64_t name_at = at + kLocalHeaderSize;
  if (!fits(name_at, std::uint64_t{name_length} + extra_length, d.size())) {
    log.add("out-of-bounds", entry.name, at, "local header name or extra field runs past the end of the file");
    entry.readable = false;
    return;
  }
  const std::size_t copied = name_length <= name_budget ? name_length : std::min<std::size_t>(name_length, 256);
  name_budget -= std::min<std::uint64_t>(name_budget, copied);
  entry.local_name.assign(reinterpret_cast<const char*>(d.data() + name_at), copied);
  apply_zip64_extra(d.subspan(static_cast<std::size_t>(name_at + name_length), extra_length), local, true);
  entry.data_offset = name_at + name_length + extra_length;

  if (copied != name_length || entry.local_name != entry.name) {
    log.add("name-mismatch", entry.name, at, "local header names it '" + shorten(entry.local_name) + "'");
  }
  if (entry.local_flags != entry.flags) {
    log.add("flags-mismatch", entry.name, at,
            "central flags " + hex16(entry.flags) + ", local flags " + hex16(entry.local_flags));
  }
  if (local_method != entry.method) {
    log.add("method-mismatch", entry.name, at,
            "central method " + std::to_string(entry.method) + ", local method " + std::to_string(local_method));
  }
  // With a data descriptor the local fields may legitimately be zero; the values follow the data.
  if (!(entry.local_flags & kFlagDataDescriptor)) {
    if (local.compressed_size != entry.compressed_size || local.uncompressed_size != entry.uncompressed_size) {
      log.add("size-mismatch", entry.name, at,
              "local sizes " + std::to_string(local.compressed_size) + "/" + std::to_string(local.uncompressed_size) +
                  ", central " + std::to_string(entry.compressed_size) + "/" + std::to_string(entry.uncompressed_size));
    }
    if (local_crc != entry.crc32) log.add("crc-mismatch", entry.name, at, "local header CRC differs from the central one");
  }
  if (!fits(entry.data_offset, entry.compressed_size, d.size())) {
    log.add("out-of-bounds", entry.name, entry.data_offset, "member data runs past the end of the file");
    entry.readable = false;
  }
}

// Finds members whose byte ranges (local header through data) share bytes: the classic
// overlapping-file zip bomb, or two names for one payload.
void find_overlaps(const std::vector<ZipEntry>& entries, AnomalyLog& log) {
  struct Range {
    std::uint64_t begin, end;
    std::size_t index;
  };
  std::vector<Range> ranges;
  ranges.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    if (!e.readable) continue;
    ranges.push_back({e.local_header_offset, e.data_offset + e.compressed_size, i});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.index < b.index;
  });
  std::uint64_t reach = 0;
  std::size_t reach_owner = 0;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    if (i > 0 && ranges[i].begin < reach) {
      log.add("overlap", entries[ranges[i].index].name, ranges[i].begin,
              "shares bytes with '" + shorten(entries[reach_owner].name) + "'");
    }
    if (ranges[i].end > reach) {
      reach = ranges[i].end;
      reach_owner = ranges[i].index;
    }
  }
}

// Counts EOCD signatures in the tail that are not inside member data: each one is a place where
// another reader could believe the archive ends.
std::size_t count_tail_eocds(std::span<const std::uint8_t> d, const std::vector<ZipEntry>& entries) {
  if (d.size() < 4) return 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& e : entries) {
    if (e.readable && e.compressed_size > 0) ranges.emplace_back(e.data_offset, e.data_offset + e.compressed_size);
  }
  // Merge into disjoint ranges so that one binary search answers "inside some member's data?".
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<std::uint64_t, std::uint64_t>> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  const std::uint64_t last = d.size() - 4;
  const std::uint64_t window = kMaxCommentLength + kEndOfCentralDirSize;
  const std::uint64_t lowest = last > window ? last - window : 0;
  std::size_t count = 0;
  for (std::uint64_t at = lowest; at <= last; ++at) {
    if (le32(d, static_cast<std::size_t>(at)) != kEndOfCentralDirSignature) continue;
    auto it = std::upper_bound(merged.begin(), merged.end(), at,
                               [](std::uint64_t value, const auto& range) { return value < range.first; });
    const bool inside_data = it != merged.begin() && at < std::prev(it)->second;
    if (!inside_data) ++count;
  }
  return count;
}

}  // namespace

bool looks_like_zip(std::span<const std::uint8_t> data) {
  if (data.size() >= 4 && le32(data, 0) == kLocalHeaderSignature) return true;
  auto eocd = find_last_eocd(data);
  if (!eocd) return false;
  // A bare signature in the tail of some other file is not enough: the record must point at a
  // central directory (absolute, or relative to a prefix as Python reads it), or be a zip64 or empty one.
  const auto at = static_cast<std::size_t>(*eocd);
  const std::uint16_t entries = le16(data, at + 10);
  const std::uint32_t cd_size = le32(data, at + 12);
  const std::uint32_t cd_offset = le32(data, at + 16);
  if (*eocd >= kZip64LocatorSize && has_signature(data, *eocd - kZip64LocatorSize, kZip64LocatorSignature)) return true;
  if (entries == 0 && cd_size == 0) return true;
  if (has_signature(data, cd_offset, kCentralHeaderSignature)) return true;
  if (std::uint64_t{cd_offset} + cd_size <= *eocd) {
    const std::uint64_t shifted = *eocd - cd_size;
    return has_signature(data, shifted, kCentralHeaderSignature);
  }
  return false;
}

ZipArchive read_zip(std::span<const std::uint8_t> data, const ZipLimits& limits) {
  ZipArchive archive;
  AnomalyLog log(archive.anomalies);
  const std::uint64_t size = data.size();

  auto eocd_at = find_last_eocd(data);
  if (!eocd_at) throw core::FormatError("no end-of-central-directory record in the last 64 KiB", size);
  EndOfCentralDirectory end;
  end.position = *eocd_at;
  {
    const auto at = static_cast<std::size_t>(end.position);
    end.entries = le16(data, at + 10);
    end.cd_size = le32(data, at + 12);
    end.cd_offset = le32(data, at + 16);
    end.comment_length = le16(data, at + 20);
    const std::uint16_t entries_this_disk = le16(data, at + 8);
    if (entries_this_disk != end.entries) {
      log.add("entry-count-mismatch", "", end.position,
              "EOCD says " + std::to_string(entries_this_disk) + " entries on this disk, " + std::to_string(end.entries) + " in all");
    }
  }
  read_zip64_end(data, end, archive);
  archive.zip64 = end.zip64;

  const std::uint64_t record_end = end.position + kEndOfCentralDirSize;
  if (end.comment_length > 0) {
    log.add("comment", "", record_end, std::to_string(end.comment_length) + "-byte archive comment");
  }
  if (record_end + end.comment_length > size) {
    log.add("out-of-bounds", "", record_end, "archive comment runs past the end of the file");
  } else if (record_end + end.comment_length < size) {
    log.add("trailing-data", "", record_end + end.comment_length,
            std::to_string(size - record_end - end.comment_length) + " bytes after the end of the archive");
  }

  // miniz takes offsets as absolute; Python's zipfile shifts them by the bytes the end records
  // imply were prepended. Read at the absolute place first, as the loader does.
  const std::uint64_t tail_start = end.zip64 ? end.zip64_record_position : end.position;
  std::uint64_t implied_start = 0;
  if (end.cd_offset <= tail_start && end.cd_size <= tail_start - end.cd_offset) {
    implied_start = tail_start - end.cd_size - end.cd_offset;
  }
  std::uint64_t base = 0;
  if (!has_signature(data, end.cd_offset, kCentralHeaderSignature)) {
    if (implied_start > 0 && has_signature(data, end.cd_offset + implied_start, kCentralHeaderSignature)) {
      base = implied_start;
      log.add("prefix-data", "", 0,
              std::to_string(implied_start) + " bytes were prepended without fixing the offsets: zipfile reads it, torch's loader does not");
    } else if (end.entries != 0) {
      throw core::FormatError("no central directory where the end record points", end.cd_offset);
    }
  }

  const std::uint64_t cd_start = base + end.cd_offset;
  const std::uint64_t cd_stated_end = cd_start + end.cd_size;
  if (!fits(cd_start, end.cd_size, size)) {
    log.add("out-of-bounds", "", cd_start, "central directory runs past the end of the file");
  }
  std::unordered_set<std::string> names;
  std::uint64_t local_name_budget = size;
  std::uint64_t pos = cd_start;
  while (has_signature(data, pos, kCentralHeaderSignature)) {
    if (archive.entries.size() >= end.entries && pos >= cd_stated_end) break;
    if (archive.entries.size() >= limits.max_entries) {
      log.add("zip-bomb", "", pos, "more than " + std::to_string(limits.max_entries) + " entries; the rest were not read");
      break;
    }
    if (!fits(pos, kCentralHeaderSize, size)) {
      log.add("out-of-bounds", "", pos, "central directory entry cut off by the end of the file");
      break;
    }
    const auto at = static_cast<std::size_t>(pos);
    ZipEntry entry;
    entry.flags = le16(data, at + 8);
    entry.method = le16(data, at + 10);
    entry.crc32 = le32(data, at + 16);
    Zip64Fields central{le32(data, at + 24), le32(data, at + 20), le32(data, at + 42)};
    const std::uint16_t name_length = le16(data, at + 28);
    const std::uint16_t extra_length = le16(data, at + 30);
    const std::uint16_t comment_length = le16(data, at + 32);
    const std::uint64_t record_length = kCentralHeaderSize + std::uint64_t{name_length} + extra_length + comment_length;
    if (!fits(pos, record_length, size)) {
      log.add("out-of-bounds", "", pos, "central directory entry cut off by the end of the file");
      break;
    }
    entry.name.assign(reinterpret_cast<const char*>(data.data() + at + kCentralHeaderSize), name_length);
    apply_zip64_extra(data.subspan(at + kCentralHeaderSize + name_length, extra_length), central, false);
    entry.compressed_size = central.compressed_size;
    entry.uncompressed_size = central.uncompressed_size;
    entry.local_header_offset = base + central.local_header_offset;
    if (entry.local_header_offset < central.local_header_offset) {  // wrapped
      entry.local_header_offset = std::numeric_limits<std::uint64_t>::max();
    }
    pos += record_length;

    if (!names.insert(entry.name).second) log.add("duplicate-name", entry.name, at, "the name appears more than once");
    if (is_absolute_or_parent(entry.name)) log.add("absolute-or-parent-path", entry.name, at, "name escapes the extraction folder");
    if (entry.flags & (kFlagEncrypted | kFlagStrongEncryption)) log.add("encrypted", entry.name, at, "member is encrypted");
    if (entry.method != 0 && entry.method != 8) {
      log.add("unsupported-method", entry.name, at, "compression method " + std::to_string(entry.method));
    }
    if (entry.method == 0 && entry.compressed_size != entry.uncompressed_size) {
      log.add("size-mismatch", entry.name, at, "stored member with different compressed and uncompressed sizes");
    }
    // A stored member is read in place, whatever its size (a 2 GB embedding matrix in a checkpoint
    // is normal); only what would have to be inflated is held to the limits.
    if (entry.method != 0 && (entry.uncompressed_size > limits.max_inflated_size ||
                              (entry.method == 8 && entry.uncompressed_size > inflation_cap(entry.compressed_size, limits)))) {
      log.add("zip-bomb", entry.name, at,
              "declares " + std::to_string(entry.uncompressed_size) + " bytes from " + std::to_string(entry.compressed_size));
    }
    read_local_header(data, entry, log, local_name_budget);
    archive.entries.push_back(std::move(entry));
  }

  if (archive.entries.size() != end.entries) {
    log.add("entry-count-mismatch", "", end.position,
            "end record says " + std::to_string(end.entries) + " entries, the central directory holds " +
                std::to_string(archive.entries.size()));
  }
  if (archive.entries.empty() && end.entries != 0) {
    throw core::FormatError("central directory holds no readable entry", cd_start);
  }
  if (pos != cd_stated_end && archive.entries.size() == end.entries) {
    log.add("entry-count-mismatch", "", pos,
            "central directory entries end at " + std::to_string(pos) + ", the end record says " + std::to_string(cd_stated_end));
  }

  // The first byte the archive accounts for: the earliest local header, or the directory itself.
  std::uint64_t first = cd_start;
  for (const auto& e : archive.entries) {
    if (e.readable) first = std::min(first, e.local_header_offset);
  }
  archive.archive_start = std::min(first, size);
  if (archive.archive_start > 0 && base == 0) {
    log.add("prefix-data", "", 0, std::to_string(archive.archive_start) + " bytes before the first local header");
  }
  find_overlaps(archive.entries, log);
  const std::size_t eocds = count_tail_eocds(data, archive.entries);
  if (eocds > 1) {
    log.add("multiple-eocd", "", end.position,
            std::to_string(eocds) + " end-of-central-directory signatures in the tail; readers may disagree on which one counts");
  }
  return archive;
}

std::span<const std::uint8_t> read_zip_member(std::span<const std::uint8_t> data, const ZipEntry& entry,
                                              std::vector<std::uint8_t>& storage, const ZipLimits& limits,
                                              bool check_crc, std::vector<ZipAnomaly>* anomalies) {
  if (!entry.readable || !fits(entry.data_offset, entry.compressed_size, data.size())) {
    throw core::FormatError("member '" + entry.name + "' lies outside the file", entry.data_offset);
  }
  if (entry.flags & (kFlagEncrypted | kFlagStrongEncryption)) {
    throw core::FormatError("member '" + entry.name + "' is encrypted", entry.local_header_offset);
  }
  auto compressed = data.subspan(static_cast<std::size_t>(entry.data_offset), static_cast<std::size_t>(entry.compressed_size));
  std::span<const std::uint8_t> content;
  if (entry.method == 0) {
    content = compressed;
  } else if (entry.method == 8) {
    const std::uint64_t cap = inflation_cap(entry.compressed_size, limits);
    z_stream stream{};
    if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) throw core::FormatError("zlib could not start", entry.data_offset);
    storage.clear();
    // Trust the declared size only up to a modest reservation: it is attacker-controlled.
    storage.resize(static_cast<std::size_t>(std::min<std::uint64_t>({entry.uncompressed_size, cap, 64ull << 20})) + 1);
    std::uint64_t produced = 0;
    std::size_t consumed = 0;
    int status = Z_OK;
    while (true) {
      if (produced == storage.size()) {
        if (produced > cap) break;
        storage.resize(static_cast<std::size_t>(std::min<std::uint64_t>(cap + 1, produced * 2 + 4096)));
      }
      const std::size_t in_chunk = std::min<std::size_t>(compressed.size() - consumed, 1u << 30);
      const std::size_t out_chunk = std::min<std::size_t>(storage.size() - produced, 1u << 30);
      stream.next_in = const_cast<Bytef*>(compressed.data() + consumed);
      stream.avail_in = static_cast<uInt>(in_chunk);
      stream.next_out = storage.data() + produced;
      stream.avail_out = static_cast<uInt>(out_chunk);
      status = inflate(&stream, Z_NO_FLUSH);
      consumed += in_chunk - stream.avail_in;
      produced += out_chunk - stream.avail_out;
      if (status == Z_STREAM_END) break;
      if (status == Z_BUF_ERROR && stream.avail_out != 0) break;  // input exhausted: truncated stream
      if (status != Z_OK) break;
    }
    inflateEnd(&stream);
    if (produced > cap) {
      storage.clear();
      throw core::FormatError("member '" + entry.name + "' inflates beyond the zip-bomb limit (" + std::to_string(cap) + " bytes)",
                              entry.data_offset);
    }
    if (status != Z_STREAM_END) {
      storage.clear();
      throw core::FormatError("member '" + entry.name + "' holds a damaged or truncated deflate stream", entry.data_offset + consumed);
    }
    storage.resize(static_cast<std::size_t>(produced));
    content = storage;
    if (produced != entry.uncompressed_size && anomalies) {
      anomalies->push_back({"size-mismatch", entry.name, entry.data_offset,
                            "inflates to " + std::to_string(produced) + " bytes, declared " + std::to_string(entry.uncompressed_size)});
    }
  } else {
    throw core::FormatError("member '" + entry.name + "' uses unsupported compression method " + std::to_string(entry.method),
                            entry.local_header_offset);
  }
  if (check_crc) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (std::size_t at = 0; at < content.size();) {
      const std::size_t chunk = std::min<std::size_t>(content.size() - at, 1u << 30);
      crc = crc32(crc, content.data() + at, static_cast<uInt>(chunk));
      at += chunk;
    }
    if (static_cast<std::uint32_t>(crc) != entry.crc32 && anomalies) {
      anomalies->push_back({"crc-mismatch", entry.name, entry.data_offset, "data does not match the stored CRC-32"});
    }
  }
  return content;
}

}  // namespace aegis::formats
