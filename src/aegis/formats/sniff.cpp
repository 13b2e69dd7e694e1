// Format detection from magic bytes. Strong signatures at offset 0 win; a zip found by its end
// record wins over weaker guesses (a polyglot is read the way zip readers read it); the weak
// two-byte signatures (zlib, lzma-alone) are tried last and confirmed by decoding a little.
#include "aegis/formats/sniff.h"

#include <zlib.h>

#include <array>
#include <cctype>
#include <cstring>
#include <string>
#include <string_view>

#include "aegis/formats/gguf.h"
#include "aegis/formats/hdf5.h"
#include "aegis/formats/onnx_model.h"
#include "aegis/formats/pickle.h"
#include "aegis/formats/tf_graph.h"
#include "aegis/formats/npy.h"
#include "aegis/formats/safetensors.h"
#include "aegis/formats/zip.h"

namespace aegis::formats {
namespace {

bool starts_with(std::span<const std::uint8_t> data, std::string_view magic, std::size_t at = 0) {
  return data.size() >= at + magic.size() && std::memcmp(data.data() + at, magic.data(), magic.size()) == 0;
}

// torch.save's legacy format opens with pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2).
constexpr std::string_view kLegacyTorchMagic = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";

bool is_octal_field(std::span<const std::uint8_t> field, std::uint64_t& value) {
  value = 0;
  bool digits = false;
  for (std::uint8_t c : field) {
    if (c >= '0' && c <= '7') {
      value = value * 8 + (c - '0');
      digits = true;
    } else if (c == ' ' || c == '\0') {
      if (digits) break;
    } else {
      return false;
    }
  }
  return digits;
}

// A pre-POSIX (v7) tar header has no magic, only a checksum over its 512 bytes.
bool is_tar_header(std::span<const std::uint8_t> data) {
  if (data.size() < 512) return false;
  if (starts_with(data, "ustar", 257)) return true;
  if (data[0] == 0) return false;
  std::uint64_t stored = 0;
  if (!is_octal_field(data.subspan(148, 8), stored)) return false;
  std::uint64_t unsigned_sum = 0;
  for (std::size_t i = 0; i < 512; ++i) unsigned_sum += (i >= 148 && i < 156) ? ' ' : data[i];
  return stored == unsigned_sum;
}

// Protocol 0/1 pickles have no header; accept the opcodes a real dump starts with, checking the
// argument shape of text opcodes, and ask the weak ones to end in STOP.
bool ends_with_stop(std::span<const std::uint8_t> data) {
  std::size_t end = data.size();
  while (end > 0 && (data[end - 1] == '\n' || data[end - 1] == '\r')) --end;
  return end > 0 && data[end - 1] == '.';
}

bool is_text_line(std::span<const std::uint8_t> data, std::size_t from, std::string_view allowed_extra, std::size_t& next) {
  constexpr std::size_t kMaxLine = 256;
  for (std::size_t i = from; i < data.size() && i < from + kMaxLine; ++i) {
    const std::uint8_t c = data[i];
    if (c == '\n') {
      next = i + 1;
      return i > from;
    }
    const bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    if (!word && allowed_extra.find(static_cast<char>(c)) == std::string_view::npos) return false;
  }
  return false;
}

bool looks_like_unframed_pickle(std::span<const std::uint8_t> data, int depth = 0) {
  if (data.empty() || depth > 4) return false;
  std::size_t next = 0;
  switch (data[0]) {
    case 'c':  // GLOBAL module\nname\n
      return is_text_line(data, 1, "", next) && is_text_line(data, next, "", next);
    case 'I': case 'L':  // INT / LONG in decimal
      return is_text_line(data, 1, "-L", next) && ends_with_stop(data);
    case 'F':
      return is_text_line(data, 1, "-+eE", next) && ends_with_stop(data);
    case 'S':
      return data.size() > 1 && (data[1] == '\'' || data[1] == '"') && ends_with_stop(data);
    case 'V':
      return ends_with_stop(data) && std::memchr(data.data(), '\n', data.size()) != nullptr;
    case '(': case ']': case '}': case ')': case 'N':
      // Openers are followed by a memo put, a container builder, STOP, or another value.
      if (data.size() < 2 || !ends_with_stop(data)) return false;
      if (std::string_view("dltpq(.").find(static_cast<char>(data[1])) != std::string_view::npos) return true;
      return looks_like_unframed_pickle(data.subspan(1), depth + 1);
    case 'K': case 'J': case 'M': case 'X': case 'U': case 'T': case 'G':
      return depth > 0 && ends_with_stop(data);  // binary opcodes of protocol 1: only after a container opener
    default:
      return false;
  }
}

bool looks_like_pickle_stream(std::span<const std::uint8_t> data) {
  if (data.size() >= 2 && data[0] == 0x80) return data[1] <= 5;
  return looks_like_unframed_pickle(data);
}

// Two bytes are a weak signature; decoding the start of the stream settles it.
bool looks_like_zlib(std::span<const std::uint8_t> data) {
  if (data.size() < 3) return false;
  if ((data[0] & 0x0F) != 8 || (data[0] >> 4) > 7 || ((data[0] << 8) | data[1]) % 31 != 0 || (data[1] & 0x20)) return false;
  z_stream stream{};
  if (inflateInit(&stream) != Z_OK) return false;
  std::array<std::uint8_t, 256> out;
  stream.next_in = const_cast<Bytef*>(data.data());
  stream.avail_in = static_cast<uInt>(std::min<std::size_t>(data.size(), 4096));
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  const int status = inflate(&stream, Z_NO_FLUSH);
  const bool progressed = stream.total_out > 0 || status == Z_STREAM_END;
  inflateEnd(&stream);
  return (status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR) && progressed;
}

// The .lzma "alone" header: a properties byte, a dictionary size and an uncompressed size.
bool looks_like_lzma_alone(std::span<const std::uint8_t> data) {
  if (data.size() < 14 || data[0] >= 9 * 5 * 5) return false;
  std::uint32_t dictionary = 0;
  for (int i = 4; i >= 1; --i) dictionary = (dictionary << 8) | data[static_cast<std::size_t>(i)];
  // liblzma writes 2^n or 2^n + 2^(n-1); accept those only.
  bool plausible_dictionary = false;
  for (int n = 12; n <= 30 && !plausible_dictionary; ++n) {
    plausible_dictionary = dictionary == (1u << n) || dictionary == (1u << n) + (1u << (n - 1));
  }
  if (!plausible_dictionary && dictionary != 0xFFFFFFFFu) return false;
  bool unknown_size = true;
  std::uint64_t size = 0;
  for (int i = 12; i >= 5; --i) {
    size = (size << 8) | data[static_cast<std::size_t>(i)];
    unknown_size = unknown_size && data[static_cast<std::size_t>(i)] == 0xFF;
  }
  return unknown_size || size < (1ull << 40);
}

}  // namespace

std::string_view to_string(FileKind kind) {
  switch (kind) {
    case FileKind::Empty: return "empty";
    case FileKind::Pickle: return "pickle";
    case FileKind::LegacyTorch: return "legacy-torch";
    case FileKind::Zip: return "zip";
    case FileKind::Tar: return "tar";
    case FileKind::SevenZip: return "7z";
    case FileKind::Gzip: return "gzip";
    case FileKind::Bzip2: return "bzip2";
    case FileKind::Xz: return "xz";
    case FileKind::Lzma: return "lzma";
    case FileKind::Zlib: return "zlib";
    case FileKind::Npy: return "npy";
    case FileKind::Safetensors: return "safetensors";
    case FileKind::Gguf: return "gguf";
    case FileKind::Hdf5: return "hdf5";
    case FileKind::Onnx: return "onnx";
    case FileKind::TfSavedModel: return "tf-savedmodel";
    case FileKind::TfGraphDef: return "tf-graphdef";
    case FileKind::KerasMetadata: return "keras-metadata";
    case FileKind::TfFingerprint: return "tf-fingerprint";
    case FileKind::Unknown: return "unknown";
  }
  return "unknown";
}

FileKind sniff(std::span<const std::uint8_t> data) {
  if (data.empty()) return FileKind::Empty;
  if (starts_with(data, "PK\x03\x04")) return FileKind::Zip;
  if (starts_with(data, "\x89HDF\r\n\x1a\n")) return FileKind::Hdf5;
  if (starts_with(data, "7z\xBC\xAF\x27\x1C")) return FileKind::SevenZip;
  if (starts_with(data, std::string_view("\xFD" "7zXZ\x00", 6))) return FileKind::Xz;
  if (starts_with(data, "\x1F\x8B")) return FileKind::Gzip;
  if (starts_with(data, "BZh") && data.size() > 3 && data[3] >= '1' && data[3] <= '9') return FileKind::Bzip2;
  if (looks_like_npy(data)) return FileKind::Npy;
  if (looks_like_safetensors(data)) return FileKind::Safetensors;
  if (looks_like_gguf(data)) return FileKind::Gguf;
  if (data.size() >= 512 && starts_with(data, "ustar", 257)) return FileKind::Tar;
  if (looks_like_zip(data)) return FileKind::Zip;
  if (looks_like_hdf5(data)) return FileKind::Hdf5;  // behind a user block
  if (starts_with(data, kLegacyTorchMagic)) return FileKind::LegacyTorch;
  if (is_tar_header(data)) return FileKind::Tar;
  if (looks_like_pickle_stream(data)) return FileKind::Pickle;
  if (looks_like_zlib(data)) return FileKind::Zlib;
  if (looks_like_lzma_alone(data)) return FileKind::Lzma;
  return FileKind::Unknown;
}

FileKind sniff(std::span<const std::uint8_t> data, std::string_view file_name) {
  FileKind kind = sniff(data);
  // Text-like bytes can pass for a protocol-0 pickle; a name that says protobuf wins over that guess.
  const bool weak = kind == FileKind::Unknown || kind == FileKind::Zlib || kind == FileKind::Lzma ||
                    (kind == FileKind::Pickle && !looks_like_pickle(data));
  if (!weak) return kind;
  if (auto tf = tf_kind_from_name(file_name)) {
    switch (*tf) {
      case TfFileKind::SavedModel: return FileKind::TfSavedModel;
      case TfFileKind::KerasMetadata: return FileKind::KerasMetadata;
      case TfFileKind::Fingerprint: return FileKind::TfFingerprint;
      case TfFileKind::GraphDef:
        if (looks_like_graphdef(data)) return FileKind::TfGraphDef;
        break;
    }
  }
  std::string lower(file_name.substr(file_name.size() - std::min<std::size_t>(file_name.size(), 5)));
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == ".onnx") return FileKind::Onnx;
  if (kind == FileKind::Unknown && looks_like_onnx(data)) return FileKind::Onnx;
  return kind;
}

}  // namespace aegis::formats
