// Decides a file's format from its bytes, never from its name.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace aegis::formats {

enum class FileKind {
  Empty,
  Pickle,        // a raw pickle stream (also joblib's uncompressed files)
  LegacyTorch,   // torch.save before 1.6: pickles after a magic-number pickle, then raw storages
  Zip,           // PyTorch/TorchScript archives, .npz, plain zips
  Tar,           // tar (legacy torch.save wrote one), possibly PyTorch's legacy tar format
  SevenZip,
  Gzip,
  Bzip2,
  Xz,
  Lzma,
  Zlib,          // joblib's zlib compression
  Npy,
  Safetensors,
  Gguf,          // llama.cpp / ggml model files
  Unknown,
};

std::string_view to_string(FileKind kind);
FileKind sniff(std::span<const std::uint8_t> data);

}  // namespace aegis::formats
