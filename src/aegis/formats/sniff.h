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
  Hdf5,          // Keras .h5 (and any other HDF5 file)
  Onnx,          // protobuf ModelProto: no magic, told by name or by its first fields
  TfSavedModel,  // saved_model.pb
  TfGraphDef,    // a frozen GraphDef (*.pb)
  KerasMetadata, // keras_metadata.pb inside a SavedModel
  TfFingerprint, // fingerprint.pb inside a SavedModel
  Unknown,
};

std::string_view to_string(FileKind kind);
FileKind sniff(std::span<const std::uint8_t> data);

// Protobuf formats (ONNX, TensorFlow) have no magic bytes: where the bytes say nothing, the file
// name decides (saved_model.pb, *.onnx, ...). A name never overrides a signature found in the bytes,
// so a pickle named model.onnx is still read as a pickle.
FileKind sniff(std::span<const std::uint8_t> data, std::string_view file_name);

}  // namespace aegis::formats
